"""STEPWELL_SECRET_KEYS as console/settings.py reads it."""

import os
import subprocess
import sys
from pathlib import Path

from lib.env import new_fernet_key

ROOT = Path(__file__).resolve().parents[2]


def secret_keys(var_dir: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "STEPWELL_SECRET_KEYS"}
    return subprocess.run(
        [sys.executable, "-c", "import console.settings as s; print(s.STEPWELL_SECRET_KEYS)"],
        env={**base, "SECRET_KEY": "x", "STEPWELL_VAR_DIR": str(var_dir), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_with_debug_a_key_is_made_once_in_the_var_dir(tmp_path):
    first = secret_keys(tmp_path, DEBUG="true")
    again = secret_keys(tmp_path, DEBUG="true")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    key = (tmp_path / "secret_keys").read_text()
    assert first.stdout.strip() == repr([key])
    assert (tmp_path / "secret_keys").stat().st_mode & 0o777 == 0o600


def test_without_debug_none_is_made_and_secrets_are_off(tmp_path):
    probe = secret_keys(tmp_path, DEBUG="false")
    assert probe.stdout.strip() == "[]", probe.stderr
    assert not (tmp_path / "secret_keys").exists()


def test_given_keys_are_used_in_order(tmp_path):
    keys = [new_fernet_key(), new_fernet_key()]
    probe = secret_keys(tmp_path, DEBUG="true", STEPWELL_SECRET_KEYS=",".join(keys))
    assert probe.stdout.strip() == repr(keys), probe.stderr
    assert not (tmp_path / "secret_keys").exists()
