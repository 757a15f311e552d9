"""The sandbox runtime, copied into the sandbox state dir and byte-compiled there.

Jails bind the copy read-only at /runtime, not the checkout's runtime/ directory:
the sandbox uids must be able to reach what is bound (a checkout under a private
home directory is not reachable, and every step failed), and the jail runs its
interpreter with -B, so only .pyc files written beforehand by that same interpreter
spare each fresh activation compiling the runtime again (about 6 ms).

The copy is named by a digest of the sources and the interpreter, made in a temporary
directory and renamed into place whole, so concurrent workers (and a later release)
never see half of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

from execution.sandbox.config import SandboxConfig, SandboxSetupError

log = logging.getLogger(__name__)

READY = ".ready"
INSIDE = "/runtime"  # where a jail mounts it: the path tracebacks show


def installed(config: SandboxConfig) -> SandboxConfig:
    """`config`, its runtime_dir the compiled copy in its state dir (made if need be)."""
    if config.runtime_dir.parent == config.state_dir / "runtime":
        return config
    copy = install(config.runtime_dir, config.state_dir / "runtime", config.python)
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
    """The runtime's copy under `root`, made (and compiled) if this version has none yet."""
    target = root / digest(source, python)
    if (target / READY).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    staging = root / f".staging-{os.getpid()}-{threading.get_ident()}"
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
    return target


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
