"""zygote.py: the warm-up a warm jail runs before its first step."""

import json
import subprocess
import sys

import boot
import zygote
from django.conf import settings
from stepwell import _progress

from execution.sandbox.config import RUNTIME_DIR


def test_the_zygotes_warm_up_runs_only_its_own_workflow_and_leaves_nothing_behind(capsys):
    modules = set(sys.modules)
    ran = []
    original = boot.outcome

    def outcome(job_bytes, channel=None, tenant=None):
        doc = original(job_bytes, channel, tenant)
        ran.append((tenant.__name__, json.loads(doc)))
        return doc

    boot.outcome = outcome
    try:
        zygote.warm_up(boot)
    finally:
        boot.outcome = original
    assert len(ran) == zygote.WARM_UP_RUNS
    assert {name for name, _ in ran} == {"stepwell_warm_up"}
    # Its second step ran for real: the runtime's whole path, result encoding included.
    assert ran[0][1]["ok"] and ran[0][1]["result"]["output"] == [1, {"x": 1}]
    assert _progress._sink is None
    assert set(sys.modules) - modules <= {"zygote", "json_codec"}  # the zygote imports both
    assert capsys.readouterr() == ("", "")


def test_descriptors_cross_the_control_socket_as_with_the_socket_module():
    import _socket
    import os

    host, zygote_end = _socket.socketpair()
    pipes = [os.pipe() for _ in range(3)]
    sent = [fd for pair in pipes for fd in pair]
    try:
        zygote.send_fds(host, b"R", sent[:4])
        kind, fds = zygote.recv_fds(zygote_end, 1, zygote.MAX_FDS_PER_STEP)
        assert kind == b"R" and len(fds) == 4
        assert [os.fstat(a).st_ino for a in fds] == [os.fstat(b).st_ino for b in sent[:4]]
        for fd in fds:
            os.close(fd)
        zygote.send_fds(host, b"C", [])
        assert zygote.recv_fds(zygote_end, 1, zygote.MAX_FDS_PER_STEP) == (b"C", [])
        # More than it takes: the kernel hands over what fits and closes the rest.
        zygote.send_fds(host, b"R", sent)
        kind, fds = zygote.recv_fds(zygote_end, 1, zygote.MAX_FDS_PER_STEP)
        assert kind == b"R" and len(fds) == zygote.MAX_FDS_PER_STEP
        for fd in fds:
            os.close(fd)
    finally:
        host.close()
        zygote_end.close()
        for fd in sent:
            os.close(fd)


START_IMPORTS = """
import sys
sys.path.insert(0, sys.argv[1])
import boot
import zygote
zygote.set_dumpable(0)
dumpable_off = zygote._prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
zygote.set_dumpable(1)
zygote.preload_runtime(boot)
heavy = ("socket", "selectors", "ctypes", "traceback", "linecache", "enum", "re", "json")
print(dumpable_off, zygote._prctl(3, 0, 0, 0, 0), sorted(m for m in heavy if m in sys.modules))
"""


def test_a_warm_jail_start_loads_no_heavy_module_and_still_sets_dumpable():
    # Each of these cost every warm-jail start milliseconds of CPU (bench/README.md).
    done = subprocess.run(
        [settings.STEPWELL_SANDBOX_PYTHON, "-I", "-S", "-B", "-c", START_IMPORTS, str(RUNTIME_DIR)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(maxsplit=2) == ["0", "1", "[]"]
