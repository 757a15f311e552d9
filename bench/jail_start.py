"""Where a warm jail's start goes (issue 18 point 4): p50 of each phase over --starts starts.

    .venv/bin/python bench/jail_start.py [--starts 20] [--tenant-imports json]

Starts warm jails one after the other, as WarmSandbox does on a miss (a slot, the code
dir, the job cgroup, the config, nsjail, the zygote's two handshakes), each for a tenant
module of its own, and stops each before the next. Host phases are timed around the
calls WarmJail.start makes; the jail's own from a probe: a copy of the installed runtime
whose boot.py notes time.monotonic() (the host's clock too: jails get no time
namespace) as its first line, after the zygote's import, around the warm-up and the
tenant's import, and before each frame, and writes the notes to the jail's log (nsjail's
stderr, which the host reads) before "ready". The probe costs a few tens of µs.
"python start" is the interpreter's own start-up outside any jail (`python -I -S -B -c
pass`, p50), to tell it from nsjail's set-up within "spawn -> first line". "CPU of nsjail
+ zygote" is their user + system time over a start and its stop (getrusage of reaped
children): on a shared machine it says more than wall times, which depend on the load.
getrusage misses the kernel's work on the jail's behalf outside those processes (a
network namespace is torn down by a kworker, RCU callbacks run in kthreads...): "kernel
threads' CPU" is the CPU time of all kernel threads (kthreadd's children, from their
schedstat, in ns) over each start, its stop and the gap after it, less what they used
over an idle stretch as long right after; the mean of those differences. Other work on
the machine moves both (another sandbox's teardowns count too): a rough figure, whose
spread the p5-p95 of the idle stretches shows.

Starts are --gap seconds apart: a move into a v1 cgroup waits for an RCU grace period
(some 10 ms) unless another move ran within the last few ms, so back to back, one start's
moves would ride on the last one's and look cheaper than a worker's occasional start.

STEPWELL_SANDBOX_UID (default 99000) and STEPWELL_SANDBOX_DIR (a temporary directory
under it, default /tmp) say which uids and where; 16 slots.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sandbox import percentile
from execution.sandbox import FreshSandbox, Limits, SandboxConfig, warm_jail
from execution.sandbox.cgroups import Layout
from execution.sandbox.jail import PYTHON_FLAGS
from execution.sandbox.warm_jail import WarmJail

SLOTS = 16
PROBE_MODULE = '''
import os
import time


def install(zygote, up):
    """Note the zygote's phases; write them to the log just before "ready"."""
    log = os.dup(2)  # fd 2 is the jail's log until the zygote quiets it
    marks = [("first line", up), ("zygote imported", time.monotonic())]

    def wrap(name, before=None, after=None):
        inner = getattr(zygote, name)

        def timed(*args):
            if before:
                marks.append((before, time.monotonic()))
            if name == "send_frame" and args[1] == {"ready": True}:
                text = "".join(f"PROBE {m} {t!r}\\n" for m, t in marks)
                os.write(log, text.encode())
            result = inner(*args)
            if after:
                marks.append((after, time.monotonic()))
            return result

        setattr(zygote, name, timed)

    wrap("warm_up", "runtime imported", "warmed up")
    wrap("preload_tenant", "GO received", "tenant imported")
    wrap("send_frame", "frame sent")
'''
BOOT_HOOK = "        import zygote\n\n        zygote.serve(sys.modules[__name__])\n"
BOOT_PROBED = (
    "        import zygote\n        import jail_start_probe\n\n"
    "        jail_start_probe.install(zygote, _probe_up)\n"
    "        zygote.serve(sys.modules[__name__])\n"
)
# Each row: a phase's name, and the marks it runs between.
PHASES = (
    ("host: claim a slot", "start", "slot claimed"),
    ("host: write the code dir", "slot claimed", "code written"),
    ("host: create the job cgroup", "code written", "job created"),
    ("host: render the nsjail config", "render called", "rendered"),
    ("host: posix_spawn nsjail", "spawn called", "spawned"),
    ("nsjail set-up + python start", "spawned", "first line"),
    ("import boot's zygote (and its stdlib)", "first line", "zygote imported"),
    ("  meanwhile host: started -> cpuacct group joined", "started received", "joined"),
    ("import the runtime (stepwell...)", "zygote imported", "runtime imported"),
    ("warm-up (10 runs of the runtime)", "runtime imported", "warmed up"),
    ("gc, measure frame -> host has it", "warmed up", "measure received"),
    ("host: memory limit, GO -> zygote has it", "measure received", "GO received"),
    ("tenant import", "GO received", "tenant imported"),
    ("checks, wipe, gc.freeze -> ready sent", "tenant imported", "ready sent"),
    ("ready frame -> host has it", "ready sent", "ready received"),
    ("host: counters, zygote pid, watch", "ready received", "end"),
    ("total", "start", "end"),
)
TENANT = "CONSTANT = {n}\n\ndef run(event, step):\n    return step.do('a', lambda: CONSTANT)\n"


class Marks(dict):
    def note(self, name: str) -> None:
        self[name] = time.monotonic()


class TimedJail(WarmJail):
    """WarmJail, noting when each control frame arrives."""

    marks: Marks

    def _next_frame(self, deadline: float) -> dict | None:
        frame = super()._next_frame(deadline)
        self.marks.note(f"{next(iter(frame or {'?': 0}))} received")
        return frame

    def _join_cpu_group(self) -> None:
        self.marks.note("join called")
        super()._join_cpu_group()
        self.marks.note("joined")


def probe_runtime(installed: Path, into: Path) -> Path:
    """A copy of the installed runtime (with its .pyc files) whose boot notes its phases."""
    shutil.copytree(installed, into)
    boot = into / "boot.py"
    source = boot.read_text()
    if BOOT_HOOK not in source:
        raise SystemExit("boot.py changed: update bench/jail_start.py's BOOT_HOOK")
    source = "import time as _t\n_probe_up = _t.monotonic()\n" + source.replace(
        BOOT_HOOK, BOOT_PROBED
    )
    boot.write_text(source)
    (into / "jail_start_probe.py").write_text(PROBE_MODULE)
    for path in into.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into


def timed_calls(box: FreshSandbox, marks: Marks) -> None:
    """Wrap the calls WarmJail.start makes, so that each notes when it returns."""
    claim, render, spawn = box.slots.claim, warm_jail.render, os.posix_spawn

    def timed_claim(*args):
        result = claim(*args)
        marks.note("slot claimed")
        return result

    def timed_render(*args):
        marks.note("render called")
        result = render(*args)
        marks.note("rendered")
        return result

    def timed_spawn(*args, **kwargs):
        marks.note("spawn called")
        result = spawn(*args, **kwargs)
        marks.note("spawned")
        return result

    box.slots.claim = timed_claim
    warm_jail.render = timed_render
    os.posix_spawn = timed_spawn


class TimedLayout(Layout):
    marks: Marks | None = None

    def create_job(self, name: str, memory_bytes: int):
        job = super().create_job(name, memory_bytes)
        TimedLayout.marks.note("job created")
        return job


def one_start(box: FreshSandbox, config: SandboxConfig, layout: Layout, n: int, marks: Marks):
    marks.clear()
    cpu_before = children_cpu()

    def code_dir(slot: int) -> Path:
        path = box.code_dir_for(slot, TENANT.format(n=n))
        marks.note("code written")
        return path

    jail = TimedJail(
        config,
        layout,
        box.slots,
        range(SLOTS - 1, -1, -1),
        code_dir,
        Limits(),
        f"job-{os.getpid()}-start{n}",
        box.network,
    )
    jail.marks = marks
    marks.note("start")
    jail.start()
    marks.note("end")
    jail._drain_log()
    for line in bytes(jail.log_tail).decode(errors="replace").splitlines():
        if line.startswith("PROBE "):
            name, _, value = line[6:].rpartition(" ")
            if name != "frame sent":
                marks[name] = float(value)
            else:  # the measure frame, then the ready frame
                marks["measure sent" if "measure sent" not in marks else "ready sent"] = float(
                    value
                )
    stopped = time.monotonic()
    jail.stop()
    marks["stop"] = time.monotonic() - stopped
    marks["cpu"] = children_cpu() - cpu_before  # nsjail and the zygote, reaped by now
    return dict(marks)


def kernel_threads_cpu() -> float:
    """Seconds on the CPU of every kernel thread (kthreadd, pid 2, and its children)."""
    ns = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                parent = f.read().rsplit(b")", 1)[1].split()[1]
            if entry.name == "2" or parent == b"2":
                with open(f"/proc/{entry.name}/schedstat", "rb") as f:
                    ns += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return ns / 1e9


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def python_start(python: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run([python, *PYTHON_FLAGS, "-c", "pass"], check=True)
        samples.append(time.monotonic() - began)
    return percentile(samples, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between starts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("warm jails need root (cgroups, namespaces)")
    uid = int(os.environ.get("STEPWELL_SANDBOX_UID", "99000"))
    parent = os.environ.get("STEPWELL_SANDBOX_DIR") or None
    state = Path(tempfile.mkdtemp(prefix="stepwell-jail-start-", dir=parent))
    state.chmod(0o755)
    try:
        box = FreshSandbox(SandboxConfig(uid_base=uid, slots=SLOTS, state_dir=state))
        box.prepare()
        probe = probe_runtime(box.config.runtime_dir, state / "probe-runtime")
        config = SandboxConfig(uid_base=uid, slots=SLOTS, state_dir=state, runtime_dir=probe)
        layout = TimedLayout.detect(config.cgroup_root)
        marks = Marks()
        TimedLayout.marks = marks
        timed_calls(box, marks)
        one_start(box, config, layout, -1, marks)  # the page cache
        time.sleep(args.gap)
        runs, busy, idle = [], [], []
        for n in range(args.starts):
            began, kernel = time.monotonic(), kernel_threads_cpu()
            runs.append(one_start(box, config, layout, n, marks))
            time.sleep(args.gap)  # starts apart, as on a worker: see the module's docstring
            middle, kernel_middle = time.monotonic(), kernel_threads_cpu()
            time.sleep(middle - began)  # as long, idle: what the kernel threads do anyway
            busy.append(kernel_middle - kernel)
            idle.append(kernel_threads_cpu() - kernel_middle)
        python = python_start(config.python, args.starts)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    load = os.getloadavg()
    print(
        f"warm jail start, p50 of {args.starts} starts; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    for label, begin, end in PHASES:
        spans = [run[end] - run[begin] for run in runs if begin in run and end in run]
        if not spans:
            continue
        p50, p95 = (percentile(spans, q) * 1000 for q in (0.5, 0.95))
        print(f"{label:46} {p50:7.1f} ms  (p95 {p95:6.1f})")
    print(f"{'  of which python start alone, outside a jail':46} {python * 1000:7.1f} ms")
    for label, key in (("stop (not part of the start)", "stop"), ("CPU of nsjail + zygote", "cpu")):
        print(f"{label:46} {percentile([run[key] for run in runs], 0.5) * 1000:7.1f} ms")
    label = "kernel threads' CPU per start (less idle)"
    extra = (sum(busy) - sum(idle)) / args.starts * 1000
    spread = " - ".join(f"{percentile(idle, q) * 1000:.1f}" for q in (0.05, 0.95))
    print(f"{label:46} {extra:7.1f} ms  (idle stretches {spread} ms)")


if __name__ == "__main__":
    main()
