"""The code cache: each slot's copy of the tenant module its jail runs, kept from other users."""

import os
import stat
import threading
from pathlib import Path

from execution.sandbox.config import SandboxSetupError, closed_ancestor

CODE_ROOT_MODE = 0o711  # the slots' uids pass through to their own directory, list nothing


class CodeCache:
    """The tenant source each slot runs, readable by that slot's uid and root alone.

    nsjail mounts /code as the slot's uid (a 0700 source fails with EACCES), so that uid
    must reach it: code/ is 0711 (no listing), code/<slot>/ is root:<slot gid> 0750 and its
    tenant.py 0640. No other local user, and no other slot, can read a tenant's code.
    A slot is held by one jail at a time, so its directory holds that jail's code alone.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.parent.chmod(0o755)
        self.directory.chmod(CODE_ROOT_MODE)
        for entry in self.directory.iterdir():
            # Before issue 13 the cache was world-readable (0755 by sha256, 0644 files).
            mode = entry.lstat().st_mode
            if stat.S_ISDIR(mode) and stat.S_IMODE(mode) != 0o750:
                entry.chmod(0o750)
                for source in entry.iterdir():
                    source.chmod(0o640)
        closed = closed_ancestor(self.directory)
        if closed is not None:
            raise SandboxSetupError(
                f"{closed} is not traversable by other users, so the sandbox uids "
                f"cannot read {self.directory}; choose another STEPWELL_SANDBOX_DIR"
            )

    def put(self, name: str, code: str, gid: int = 0) -> Path:
        """Write code as <name>/tenant.py, readable by root and the group gid; its dir."""
        directory = self.directory / name
        try:
            os.mkdir(directory, 0o750)
        except FileExistsError:
            pass
        else:
            os.chown(directory, 0, gid)
            os.chmod(directory, 0o750)  # mkdir's mode passes through the umask
        tmp = directory / f".tenant.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o640)
        try:
            os.fchown(fd, 0, gid)
            os.fchmod(fd, 0o640)
            data = code.encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, directory / "tenant.py")
        return directory
