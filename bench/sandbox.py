"""Fresh-sandbox start-up cost against its floor (SANDBOX.md: nsjail ~6 ms, python ~11 ms).

    .venv/bin/python bench/sandbox.py [--runs 50]

Measures, over the same number of sequential runs: (a) the sandbox interpreter doing
nothing, bare; (b) nsjail with Stepwell's namespaces, cgroups and seccomp policy around
/bin/true; (c) one Stepwell activation of ``def main(x): return x``. Goal: c within 2x
of b + a. ``measure()`` returns the numbers for other benchmarks.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nsjail.config import Exe
from nsjail.serializers import to_textproto

from execution.sandbox import (
    FreshSandbox,
    Limits,
    SandboxConfig,
    SandboxRequest,
    Status,
    jail,
)
from execution.sandbox.cgroups import Layout

TRIVIAL = "def main(x):\n    return x\n"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict:
    return {
        "p50_ms": percentile(samples, 0.50) * 1000,
        "p95_ms": percentile(samples, 0.95) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def timed(fn, runs: int) -> list[float]:
    fn()  # warm the page cache
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def bare_python(config: SandboxConfig):
    argv = [config.python, "-c", "pass"]
    return lambda: subprocess.run(argv, check=True, env={})


def bare_nsjail(config: SandboxConfig, limits: Limits, command: tuple[str, ...] = ("/bin/true",)):
    """nsjail around /bin/true (or `command`) with the activation's policy (a job cgroup
    made once, for one such runner at a time)."""
    box = FreshSandbox(config)
    box.prepare()
    layout = Layout.detect(config.cgroup_root)
    job = layout.create_job(f"job-{os.getpid()}-bench", limits.memory_bytes)
    code_dir = box.code_cache.put("0", TRIVIAL, config.uid_base)  # slot 0's
    cfg = jail.build(config, jail.JailSpec(limits, config.uid_base, code_dir, job))
    cfg.exec_bin = Exe(path=command[0], arg=list(command[1:]))
    cfg.log_fd = None
    cfg.log_level = None
    cfg.pass_fd = []
    config_file = Path(tempfile.mkdtemp(prefix="stepwell-bench-")) / "nsjail.cfg"
    config_file.write_text(to_textproto(cfg) + "\n")
    argv = [config.nsjail_path, "--quiet", "--config", str(config_file)]

    def run():
        subprocess.run(argv, check=True, env={}, stderr=subprocess.DEVNULL)

    def cleanup():
        job.remove()
        shutil.rmtree(config_file.parent, ignore_errors=True)

    return run, cleanup


def children_cpu_ms(fn, runs: int) -> float:
    """Mean CPU (ms, user + system) of the processes fn() runs and reaps, over `runs` calls."""
    fn()  # warm the page cache
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return 1000 * spent / runs


def bare_jail_cpu(runs: int = 30, config: SandboxConfig | None = None) -> dict:
    """CPU (ms) of what every new jail pays before any Stepwell code runs, each run alone:
    nsjail with the activation's policy around /bin/true ("nsjail_ms") and around the
    jail's interpreter, with the jail's flags, doing nothing ("jail_ms")."""
    owned_state = config is None
    if config is None:
        state = Path(tempfile.mkdtemp(prefix="stepwell-bench-state-"))
        state.chmod(0o755)
        config = SandboxConfig(state_dir=state)
    python = (config.python, *jail.PYTHON_FLAGS, "-c", "pass")
    try:
        return {
            key: runner_cpu_ms(bare_nsjail(config, Limits(), command), runs)
            for key, command in (("nsjail_ms", ("/bin/true",)), ("jail_ms", python))
        }
    finally:
        if owned_state:
            shutil.rmtree(config.state_dir, ignore_errors=True)


def runner_cpu_ms(runner: tuple, runs: int) -> float:
    run, cleanup = runner
    try:
        return children_cpu_ms(run, runs)
    finally:
        cleanup()


def activation(config: SandboxConfig, limits: Limits):
    box = FreshSandbox(config)
    request = SandboxRequest(tenant="bench", code=TRIVIAL, input={"n": 1}, limits=limits)

    def run():
        result = box.run(request)
        if result.status != Status.OK:
            raise RuntimeError(f"the trivial step failed: {result.error}")

    return run


def measure(runs: int = 50, config: SandboxConfig | None = None) -> dict:
    """{"python": {...}, "nsjail": {...}, "activation": {...}, ratios}, times in ms."""
    owned_state = config is None
    if config is None:
        state = Path(tempfile.mkdtemp(prefix="stepwell-bench-state-"))
        state.chmod(0o755)
        config = SandboxConfig(state_dir=state)
    limits = Limits()
    nsjail_run, cleanup = bare_nsjail(config, limits)
    try:
        results = {
            "runs": runs,
            "python": summary(timed(bare_python(config), runs)),
            "nsjail": summary(timed(nsjail_run, runs)),
            "activation": summary(timed(activation(config, limits), runs)),
        }
    finally:
        cleanup()
        if owned_state:
            shutil.rmtree(config.state_dir, ignore_errors=True)
    for stat in ("p50_ms", "p95_ms"):
        a, b, c = (results[k][stat] for k in ("python", "nsjail", "activation"))
        results[f"c_over_b_{stat[:3]}"] = c / b
        results[f"c_over_a_plus_b_{stat[:3]}"] = c / (a + b)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results = measure(max(args.runs, 1))
    print(f"{args.runs} sequential runs each; times in ms\n")
    print(f"{'':38} {'p50':>8} {'p95':>8} {'mean':>8}")
    rows = (
        ("(a) python -c pass, bare", "python"),
        ("(b) nsjail + policy around /bin/true", "nsjail"),
        ("(c) Stepwell activation, return x", "activation"),
    )
    for label, key in rows:
        r = results[key]
        print(f"{label:38} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['mean_ms']:8.1f}")
    print()
    for stat in ("p50", "p95"):
        print(
            f"{stat}: c/b = {results[f'c_over_b_{stat}']:.2f}   "
            f"c/(a+b) = {results[f'c_over_a_plus_b_{stat}']:.2f}   (goal: c/(a+b) <= 2)"
        )


if __name__ == "__main__":
    main()
