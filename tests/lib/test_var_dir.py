"""Where local state goes by default: outside the checkout (the XDG state directory),
unless the checkout's var/ already holds data; and a sandbox state dir the sandbox uids
can reach."""

import shutil
import tempfile
from pathlib import Path

import pytest

from execution.sandbox.config import DEFAULT_STATE_DIR, SandboxConfig, default_state_dir
from lib.env import default_var_dir

HOME = Path("/home/alice")


def test_state_goes_to_the_xdg_state_directory_by_default(tmp_path):
    checkout_var = tmp_path / "checkout" / "var"
    assert default_var_dir(checkout_var, {}, HOME) == HOME / ".local/state/stepwell"
    assert default_var_dir(checkout_var, {"XDG_STATE_HOME": "/srv/state"}, HOME) == Path(
        "/srv/state/stepwell"
    )


def test_a_relative_xdg_state_home_is_ignored_as_the_spec_says(tmp_path):
    assert default_var_dir(tmp_path / "var", {"XDG_STATE_HOME": "state"}, HOME) == (
        HOME / ".local/state/stepwell"
    )


@pytest.mark.parametrize("data", ["stepwell.sqlite3", "secret_key"])
def test_a_checkout_var_that_already_holds_data_keeps_being_used(tmp_path, data):
    checkout_var = tmp_path / "var"
    checkout_var.mkdir()
    (checkout_var / "staticfiles").mkdir()
    assert default_var_dir(checkout_var, {}, HOME) == HOME / ".local/state/stepwell"
    (checkout_var / data).write_text("kept")
    assert default_var_dir(checkout_var, {"XDG_STATE_HOME": "/srv/state"}, HOME) == checkout_var


@pytest.fixture
def open_dir():
    directory = Path(tempfile.mkdtemp(prefix="stepwell-var-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_the_sandbox_state_stays_in_a_var_dir_the_sandbox_uids_can_reach(open_dir):
    assert default_state_dir(open_dir / "state" / "stepwell") == open_dir / "state/stepwell/sandbox"


def test_a_var_dir_in_a_private_home_puts_the_sandbox_state_on_the_machine(open_dir):
    home = open_dir / "alice"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    assert default_state_dir(home / ".local/state/stepwell") == DEFAULT_STATE_DIR


def test_an_explicit_sandbox_dir_wins(settings, open_dir):
    settings.VAR_DIR = open_dir
    settings.STEPWELL_SANDBOX_DIR = "/srv/jails"
    assert SandboxConfig.from_settings().state_dir == Path("/srv/jails")
    settings.STEPWELL_SANDBOX_DIR = ""
    assert SandboxConfig.from_settings().state_dir == open_dir / "sandbox"
