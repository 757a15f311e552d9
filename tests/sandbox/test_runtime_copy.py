"""The runtime a jail mounts: a compiled copy in the state dir, whatever the checkout's modes."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from execution.sandbox import FreshSandbox, SandboxConfig, SandboxRequest, Status, runtime_copy
from execution.sandbox.config import RUNTIME_DIR
from tests.sandbox.conftest import SLOTS, SMALL, UID_BASE

PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parents[2]
READ_FILENAME = (
    "import marshal, sys; print(marshal.loads(open(sys.argv[1], 'rb').read()[16:]).co_filename)"
)


@pytest.fixture
def state(tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="stepwell-runtime-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_copy_is_compiled_world_readable_and_made_once(state):
    copy = runtime_copy.install(RUNTIME_DIR, state / "runtime", PYTHON)
    modules = [p.relative_to(copy) for p in copy.rglob("*.py")]
    assert Path("stepwell/_engine.py") in modules and Path("zygote.py") in modules
    compiled = {p.name.split(".")[0] for p in (copy / "stepwell" / "__pycache__").iterdir()}
    assert {p.stem for p in (copy / "stepwell").glob("*.py")} <= compiled
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in copy.rglob("*") if p.is_file())
    before = (copy / "boot.py").stat().st_mtime_ns
    assert runtime_copy.install(RUNTIME_DIR, state / "runtime", PYTHON) == copy
    assert (copy / "boot.py").stat().st_mtime_ns == before
    assert [p.name for p in (state / "runtime").iterdir()] == [copy.name]  # no staging left


def test_changed_sources_get_a_copy_of_their_own(state, tmp_path):
    source = tmp_path / "runtime"
    shutil.copytree(RUNTIME_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    first = runtime_copy.install(source, state / "runtime", PYTHON)
    (source / "stepwell" / "_errors.py").write_text("# changed\n", encoding="utf-8")
    second = runtime_copy.install(source, state / "runtime", PYTHON)
    assert second != first and (second / "stepwell" / "_errors.py").read_text() == "# changed\n"


def test_tracebacks_name_the_paths_a_jail_sees(state):
    copy = runtime_copy.install(RUNTIME_DIR, state / "runtime", PYTHON)
    (pyc,) = (copy / "stepwell" / "__pycache__").glob("_engine.*.pyc")
    # Read by the interpreter that wrote it: marshal's format is its own.
    shown = subprocess.run(
        [PYTHON, "-c", READ_FILENAME, str(pyc)], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "/runtime/stepwell/_engine.py"


def test_steps_run_when_the_checkout_is_closed_to_the_sandbox_uids(state, tmp_path):
    # pytest's tmp_path is 0700: what a checkout under a private home dir looks like.
    source = tmp_path / "checkout" / "runtime"
    shutil.copytree(RUNTIME_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "checkout").chmod(0o700)
    config = SandboxConfig(uid_base=UID_BASE, slots=SLOTS, state_dir=state, runtime_dir=source)
    box = FreshSandbox(config)
    result = box.run(
        SandboxRequest(tenant="t", code="def main(x):\n    return x + 1\n", input=1, limits=SMALL)
    )
    assert result.status == Status.OK and result.result == 2, result.error
    assert box.config.runtime_dir.parent == state / "runtime"


def changed_runtime(tmp_path: Path, mark: str) -> Path:
    source = tmp_path / f"runtime-{mark}"
    shutil.copytree(RUNTIME_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "stepwell" / "_errors.py").write_text(f"# {mark}\n", encoding="utf-8")
    return source


INSTALL_IN_A_WORKER = """\
import sys
from pathlib import Path
from execution.sandbox import runtime_copy
copy = runtime_copy.install(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
print(copy, flush=True)
sys.stdin.read()  # holds the copy until its stdin closes, as a worker for its life
"""


@contextlib.contextmanager
def worker_using(source: Path, root: Path):
    """Another process that installs and holds the runtime copy of `source`."""
    worker = subprocess.Popen(
        [sys.executable, "-c", INSTALL_IN_A_WORKER, str(source), str(root), PYTHON],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Path(worker.stdout.readline().strip())
    finally:
        worker.stdin.close()
        worker.wait(30)


def test_copies_no_process_holds_are_pruned_and_held_ones_kept(state, tmp_path):
    root = state / "runtime"
    current = runtime_copy.install(RUNTIME_DIR, root, PYTHON)  # held by this process
    with worker_using(changed_runtime(tmp_path, "gone"), root) as abandoned:
        pass  # that worker has ended: nobody holds its copy
    with worker_using(changed_runtime(tmp_path, "held"), root) as held:
        assert {current, held, abandoned} <= set(root.iterdir())
        assert runtime_copy.prune(root, keep=current) == [abandoned.name]
        assert (held / runtime_copy.READY).is_file() and (current / "boot.py").is_file()
    # The worker holding it ended: now that copy goes too, the current one stays.
    assert runtime_copy.prune(root, keep=current) == [held.name]
    assert list(root.iterdir()) == [current]


def test_a_copy_pruned_while_unheld_is_made_again_by_the_next_worker(state, tmp_path):
    root = state / "runtime"
    source = changed_runtime(tmp_path, "again")
    with worker_using(source, root) as copy:
        pass
    assert runtime_copy.prune(root, keep=root / "other") == [copy.name]
    with worker_using(source, root) as again:
        assert again == copy and (again / runtime_copy.READY).is_file()


def test_a_sandbox_starting_up_prunes_what_earlier_releases_left(state, tmp_path):
    root = state / "runtime"
    with worker_using(changed_runtime(tmp_path, "old release"), root) as old:
        pass
    leftover = root / f"{runtime_copy.STAGING}1-2"
    leftover.mkdir()
    os.utime(leftover, (1, 1))  # a dead worker's half copy, long ago
    config = SandboxConfig(uid_base=UID_BASE, slots=SLOTS, state_dir=state)
    installed = runtime_copy.installed(config).runtime_dir
    assert list(root.iterdir()) == [installed] and installed != old
