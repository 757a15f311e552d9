"""docs/systemd/: a unit per Procfile process that runs what the Procfile runs, with the
Procfile's defaults, its settings (and secrets) from the environment file alone."""

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "docs" / "systemd"
ENV_FILE = "/etc/stepwell/stepwell.env"
DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")
SECRETS = re.compile(r"SECRET_KEY|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL|BROKER_URL|://[^/\s]*@")


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((UNITS / f"stepwell-{name}.service").read_text())
    return parser


def environment(service: configparser.SectionProxy) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(service.get("Environment", "")))


@pytest.mark.parametrize("name", sorted(procfile()))
def test_each_procfile_process_has_a_unit_running_its_command(name):
    service = unit(name)["Service"]
    command = procfile()[name]
    # systemd has no ${X:-default}: the unit sets the Procfile's default in Environment=.
    defaults = dict(DEFAULTED.findall(command))
    assert {k: environment(service)[k] for k in defaults} == defaults
    expected = shlex.split(DEFAULTED.sub(r"${\1}", command))
    argv = shlex.split(service["ExecStart"])
    program = Path(argv[0])
    assert program.is_absolute() and program.parent.name == "bin"  # the venv's
    assert [program.name, *argv[1:]] == expected
    assert service["WorkingDirectory"] == str(program.parent.parent.parent)


@pytest.mark.parametrize("name", sorted(procfile()))
def test_units_take_settings_from_the_environment_file_and_hold_no_secret(name):
    parsed = unit(name)
    service = parsed["Service"]
    assert service["EnvironmentFile"] == ENV_FILE
    for section in parsed.sections():
        for key, value in parsed[section].items():
            assert not SECRETS.search(value), f"{name}: {key}={value} looks like a secret"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_no_unit_is_left_without_a_procfile_process():
    names = {p.stem.removeprefix("stepwell-") for p in UNITS.glob("*.service")}
    assert names == set(procfile())


def test_the_example_environment_file_names_only_documented_settings():
    readme = (ROOT / "README.md").read_text()
    example = (UNITS / "stepwell.env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in example if line and not line.startswith("#")]
    assert names and all(f"`{name}`" in readme for name in names), names


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_reads_every_unit_without_a_warning(tmp_path):
    # The units name /opt/stepwell; here the commands are this checkout's, so that
    # systemd finds them.
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/stepwell", str(ROOT)))
    done = subprocess.run(
        ["systemd-analyze", "verify", *sorted(map(str, tmp_path.glob("*.service")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
