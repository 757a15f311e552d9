"""The sandbox's settings as console/settings.py reads them from the environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = (
    "STEPWELL_WARM_JAILS_PER_MACHINE",
    "STEPWELL_WARM_MAX_JAIL_SECONDS",
    "STEPWELL_WARM_MAX_JAIL_STEPS",
    "STEPWELL_SANDBOX_SLOT_WAIT_SECONDS",
)


def read_settings(**env: str) -> subprocess.CompletedProcess:
    # The test run's own var dir stays; every other setting of the sandbox is the default.
    base = {k: v for k, v in os.environ.items() if k not in (*NAMES, "STEPWELL_SANDBOX_SLOTS")}
    code = f"import console.settings as s; print(*(getattr(s, n) for n in {NAMES!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "SECRET_KEY": "x", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_warm_jails_default_to_half_the_slots_ten_minutes_and_a_thousand_steps():
    probe = read_settings(STEPWELL_SANDBOX_SLOTS="6")
    assert probe.stdout.split() == ["3", "600.0", "1000", "60.0"], probe.stderr


def test_more_warm_jails_per_machine_than_slots_stops_start_up():
    probe = read_settings(STEPWELL_SANDBOX_SLOTS="4", STEPWELL_WARM_JAILS_PER_MACHINE="5")
    assert probe.returncode != 0
    assert "STEPWELL_WARM_JAILS_PER_MACHINE=5 is above STEPWELL_SANDBOX_SLOTS=4" in probe.stderr
