"""The sandbox runtime, copied into the sandbox state dir and byte-compiled there.

Jails bind the copy read-only at /runtime, not the checkout's runtime/ directory:
the sandbox uids must be able to reach what is bound (a checkout under a private
home directory is not reachable, and every step failed), and the jail runs its
interpreter with -B, so only .pyc files written beforehand by that same interpreter
spare each fresh activation compiling the runtime again (about 6 ms).

The copy is named by a digest of the sources and the interpreter, made in a temporary
directory and renamed into place whole, so concurrent workers (and a later release)
never see half of one.

Each process holds a shared flock on the copy it uses for as long as it lives, so that
a release's workers can prune the copies of earlier releases once none of their workers
is left: a copy whose exclusive lock can be had is used by no one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from execution.sandbox.config import SandboxConfig, SandboxSetupError

log = logging.getLogger(__name__)

READY = ".ready"
INSIDE = "/runtime"  # where a jail mounts it: the path tracebacks show
COPY_NAME = re.compile(r"[0-9a-f]{20}")
TRASH = ".trash-"
STAGING = ".staging-"
# A staging dir this old belongs to a worker that died while copying.
STALE_STAGING_SECONDS = 3600
# Copy path -> the fd holding this process's shared lock on it, kept open for its life.
_held: dict[Path, int] = {}
_held_lock = threading.Lock()


def installed(config: SandboxConfig) -> SandboxConfig:
    """`config`, its runtime_dir the compiled copy in its state dir (made if need be),
    which this process then holds; copies no process holds any more are pruned."""
    root = config.state_dir / "runtime"
    if config.runtime_dir.parent == root:
        return config
    copy = install(config.runtime_dir, root, config.python)
    prune(root, keep=copy)
    return dataclasses.replace(config, runtime_dir=copy)


def sources(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)


def digest(source: Path, python: str) -> str:
    h = hashlib.sha256(python.encode())
    for path in sources(source):
        h.update(str(path.relative_to(source)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def install(source: Path, root: Path, python: str) -> Path:
    """The runtime's copy under `root`, made (and compiled) if this version has none yet,
    and held (a shared lock) by this process from now on."""
    target = root / digest(source, python)
    for _ in range(3):
        if not (target / READY).is_file():
            build(source, root, target, python)
        if hold(target):
            return target
    # Pruned three times between its making and its holding: something is badly wrong.
    raise SandboxSetupError(f"the sandbox runtime copy {target} keeps disappearing")


def hold(copy: Path) -> bool:
    """Takes a shared lock on `copy` for the rest of this process's life; False when the
    copy was pruned meanwhile (its maker then makes it again)."""
    with _held_lock:
        fd = _held.get(copy)
        if fd is not None and same_file(fd, copy):
            return True
        try:
            fd = os.open(copy, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        # Blocks only while a pruner holds the copy, a moment before it is renamed away.
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            # A pruner removes READY first, so a copy still READY was not pruned.
            os.stat(READY, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            return False
        old = _held.pop(copy, None)
        if old is not None:
            os.close(old)
        _held[copy] = fd
        return True


def same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def prune(root: Path, keep: Path) -> list[str]:
    """Removes the copies under `root` that no process holds, except `keep`, and what
    dead workers left behind; the names removed."""
    removed = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(TRASH) or (name.startswith(STAGING) and stale(entry)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(name)
        elif COPY_NAME.fullmatch(name) and entry != keep and remove_unheld(entry):
            removed.append(name)
    if removed:
        log.info("pruned %d old sandbox runtime copies in %s", len(removed), root)
    return removed


def stale(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > STALE_STAGING_SECONDS
    except OSError:
        return False


def remove_unheld(copy: Path) -> bool:
    try:
        fd = os.open(copy, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a worker uses it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(READY, dir_fd=fd)
        # Renamed first, so that no one finds it by its name while it is half removed.
        trash = copy.with_name(f"{TRASH}{copy.name}-{os.getpid()}")
        try:
            copy.rename(trash)
        except OSError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def build(source: Path, root: Path, target: Path, python: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    staging = root / f"{STAGING}{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path in sources(source):
            copy = staging / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        compile_all(staging, python)
        for directory, _, files in os.walk(staging):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        (staging / READY).write_text("")
        try:
            staging.rename(target)
        except OSError:
            if not (target / READY).is_file():  # not another worker's finished copy: a fault
                raise
    except OSError as exc:
        raise SandboxSetupError(f"could not install the sandbox runtime in {root}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def compile_all(directory: Path, python: str) -> None:
    """Byte-compile with the sandbox's interpreter, with the paths a jail sees; the .pyc
    files are checked by nothing at import (unchecked-hash): the copy never changes."""
    argv = [python, "-I", "-S", "-m", "compileall", "-q", "-d", INSIDE]
    argv += ["--invalidation-mode", "unchecked-hash", str(directory)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        # Steps still run, each compiling what it imports: slower, not wrong.
        log.warning("could not byte-compile the sandbox runtime: %s", done.stderr[-2000:])
