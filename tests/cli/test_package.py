"""`pip install ./cli` for real: a wheel built from the repository's layout and installed
into a fresh virtualenv, whose `stepwell` then replays on the runtime inside the wheel.

The wheel is built with this venv's setuptools, as `pip install --no-build-isolation`
would, so that the test needs no network; a tenant's `pip install ./cli` builds the same
way in an isolated environment that fetches setuptools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv

from tests.cli.test_replay import FIXED, history
from tests.integration.stack import ROOT

RUNTIME = "execution/sandbox/runtime"


def test_the_package_installs_from_a_checkout_and_replays_on_its_own_runtime(tmp_path):
    checkout = tmp_path / "checkout"  # only what the build may read: cli/ and the runtime
    shutil.copytree(
        ROOT / "cli",
        checkout / "cli",
        symlinks=True,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    shutil.copytree(
        ROOT / RUNTIME, checkout / RUNTIME, ignore=shutil.ignore_patterns("__pycache__")
    )
    assert os.readlink(checkout / "cli/stepwell_cli/runtime") == "../../" + RUNTIME

    # The build that pip runs (PEP 517, in-tree), without pip's own start-up time.
    wheel = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta as b; print(b.build_wheel({str(tmp_path)!r}))",
        ],
        cwd=checkout / "cli",
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()[-1]

    target = tmp_path / "venv"
    venv.create(target, with_pip=False)  # this pip installs into it, through --python
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            target / "bin/python",
            "install",
            "--no-index",
            "-q",
            tmp_path / wheel,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(checkout)  # the installed command must not lean on the source

    where = subprocess.run(
        [
            target / "bin/python",
            "-c",
            "import stepwell_cli.replay as r, stepwell; print(r.RUNTIME); print(stepwell.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    site = str(target / "lib")
    assert where[0].startswith(site) and where[0].endswith("stepwell_cli/runtime")
    assert where[1] == f"{where[0]}/stepwell/__init__.py"

    (tmp_path / "h.json").write_text(json.dumps(history()))
    (tmp_path / "fixed.py").write_text(FIXED)
    done = subprocess.run(
        [
            target / "bin/stepwell",
            "replay",
            str(tmp_path / "h.json"),
            "--code",
            str(tmp_path / "fixed.py"),
            "--from-step",
            "4",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "#4 do 'charge': ran here, complete" in done.stdout
    version = subprocess.run([target / "bin/stepwell", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("stepwell 0.")
