"""Fresh against warm sandbox mode, through the one Sandbox interface (issue 8).

    .venv/bin/python bench/warm.py [--runs 200] [--threads 2] [--first]

Measures, for each mode in one run: per-activation overhead (p50/p95 of a trivial
``return x`` step), the latency of a 10-step workflow (its 11 activations one after the
other, each replaying the history so far, as the engine would run them), and
activations/s with --threads threads at once. Goal on 2 cores: warm at least 250 steps/s.
``measure()`` returns the numbers for other benchmarks (bench/engine.py).

With --first, warm mode alone: an instance's first activation (a child newly forked in
the warm jail, which may be kept) against its next step in that kept child, --runs
instances one after the other, each ended after its second step; --baseline-runtime DIR
(another checkout's execution/sandbox/runtime) alternates its instances with this one's.
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sandbox import summary
from execution.sandbox import (
    FreshSandbox,
    Limits,
    SandboxConfig,
    SandboxRequest,
    Status,
    WarmSandbox,
)

TRIVIAL = "def main(x):\n    return x\n"
WORKFLOW = """
def run(event, step):
    total = 0
    for i in range(10):
        total += step.do(f"s{i}", lambda i=i: i)
    return total
"""
STEPS_PER_SECOND_GOAL = 250.0


def activation_input(history: list[dict]) -> dict:
    return {
        "instance_id": "bench",
        "payload": {},
        "timestamp": "2026-01-01T00:00:00+00:00",
        "now": "2026-01-01T00:00:00+00:00",
        "history": history,
        "limits": {"result_bytes": 65536, "log_bytes": 65536, "step_timeout_seconds": 30.0},
    }


def checked(box, request: SandboxRequest):
    result = box.run(request)
    if result.status != Status.OK:
        raise RuntimeError(f"a bench activation failed: {result.error}")
    return result.result


def per_activation(box, runs: int) -> list[float]:
    request = SandboxRequest(tenant="bench", code=TRIVIAL, input={"n": 1}, limits=Limits())
    checked(box, request)  # start the jail and warm the page cache
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        checked(box, request)
        samples.append(time.perf_counter() - started)
    return samples


def ten_step_workflow(box) -> float:
    """Seconds for the 11 activations of a 10-step workflow, history replayed each time."""
    history: list[dict] = []
    started = time.perf_counter()
    while True:
        request = SandboxRequest(
            tenant="bench",
            code=WORKFLOW,
            input=activation_input(history),
            limits=Limits(),
            mode="workflow",
        )
        outcome = checked(box, request)
        if outcome["kind"] == "complete":
            return time.perf_counter() - started
        history.append(
            {"index": outcome["index"], "name": outcome["name"], "kind": "do",
             "status": "complete", "attempts": 1, "output": outcome["output"]}
        )  # fmt: skip


def ten_step_workflow_kept(box) -> float:
    """Seconds for the same workflow in warm mode's kept child (sticky execution): one
    run, then each step resumed with the last one's result, as the engine does."""
    request = SandboxRequest(
        tenant="bench", code=WORKFLOW, input=activation_input([]), limits=Limits(),
        mode="workflow",
    )  # fmt: skip
    started = time.perf_counter()
    result = box.run(request, keep=True)
    while result.kept is not None:
        result = result.kept.resume(request, result.result["output"], "2026-01-01T00:00:01+00:00")
        if result is None:
            raise RuntimeError("a kept child could not be resumed")
    if result.status != Status.OK or result.result["kind"] != "complete":
        raise RuntimeError(f"a kept bench workflow failed: {result.error or result.result}")
    return time.perf_counter() - started


def first_and_kept(box) -> tuple[float, float]:
    """Seconds of an instance's first activation (run with keep, as the engine does) and
    of its second step, resumed in the child the first one kept; then the child ends."""
    request = SandboxRequest(
        tenant="bench", code=WORKFLOW, input=activation_input([]), limits=Limits(),
        mode="workflow",
    )  # fmt: skip
    started = time.perf_counter()
    result = box.run(request, keep=True)
    first = time.perf_counter() - started
    if result.kept is None:
        raise RuntimeError(f"a first activation was not kept: {result.error or result.result}")
    started = time.perf_counter()
    resumed = result.kept.resume(request, result.result["output"], "2026-01-01T00:00:01+00:00")
    kept = time.perf_counter() - started
    if resumed is None or resumed.kept is None:
        raise RuntimeError("a kept child could not be resumed")
    resumed.kept.close()
    return first, kept


def box_keeps(box) -> bool:
    return isinstance(box, WarmSandbox)


def throughput(box, threads: int, seconds: float) -> float:
    """Trivial activations per second with `threads` callers at once."""
    request = SandboxRequest(tenant="bench", code=TRIVIAL, input=1, limits=Limits())
    done = [0] * threads
    stop_at = time.perf_counter() + seconds

    def caller(n: int) -> None:
        while time.perf_counter() < stop_at:
            checked(box, request)
            done[n] += 1

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - started)


def measure_mode(box, runs: int, threads: int, seconds: float) -> dict:
    samples = per_activation(box, runs)
    ten_step_workflow(box)  # once to start the workflow's jail
    workflows = [ten_step_workflow(box) for _ in range(5)]
    # Fresh mode keeps nothing: its figure is the workflow's 11 activations again.
    kept = [ten_step_workflow_kept(box) for _ in range(6)][1:] if box_keeps(box) else workflows
    return {
        **summary(samples),
        "workflow_10_steps_ms": sorted(workflows)[len(workflows) // 2] * 1000,
        "workflow_10_steps_kept_ms": sorted(kept)[len(kept) // 2] * 1000,
        "activations_per_second": throughput(box, threads, seconds),
    }


def measure(runs: int = 200, threads: int = 2, config: SandboxConfig | None = None) -> dict:
    """{"fresh": {...}, "warm": {...}}: p50_ms, p95_ms, mean_ms, workflow_10_steps_ms, ..."""
    owned_state = config is None
    if config is None:
        state = Path(tempfile.mkdtemp(prefix="stepwell-bench-warm-"))
        state.chmod(0o755)
        config = SandboxConfig(state_dir=state)
    fresh = FreshSandbox(config)
    fresh.prepare()
    warm = WarmSandbox(config, jails_per_worker=4, fresh=fresh)
    try:
        return {
            "runs": runs,
            "threads": threads,
            "fresh": measure_mode(fresh, max(runs // 5, 10), threads, seconds=3),
            "warm": measure_mode(warm, runs, threads, seconds=3),
        }
    finally:
        warm.close()
        if owned_state:
            shutil.rmtree(config.state_dir, ignore_errors=True)


def measure_first(runs: int, baseline_runtime: Path | None = None) -> dict:
    """Warm mode's first activation and kept step, p50/p95 (ms) of each: {"this": ...},
    and with `baseline_runtime` (another checkout's execution/sandbox/runtime) the same
    for it as {"baseline": ...}, its instances alternating with this one's, so that both
    see the same load."""
    # The uids of STEPWELL_SANDBOX_UID, as bench/long_runs.py: a session's own range.
    uid_base = int(os.environ.get("STEPWELL_SANDBOX_UID", "99000"))
    runtimes = {"this": None, "baseline": baseline_runtime} if baseline_runtime else {"this": None}
    boxes, states = {}, []
    try:
        for n, (name, runtime) in enumerate(runtimes.items()):
            state = Path(tempfile.mkdtemp(prefix="stepwell-bench-warm-"))
            state.chmod(0o755)
            states.append(state)
            config = SandboxConfig(state_dir=state, uid_base=uid_base + 50 * n, slots=8)
            if runtime is not None:
                config = dataclasses.replace(config, runtime_dir=runtime)
            fresh = FreshSandbox(config)
            fresh.prepare()
            boxes[name] = WarmSandbox(config, jails_per_worker=2, fresh=fresh)
        samples = {name: ([], []) for name in boxes}
        for n in range(runs + 5):  # the first few start the jails and warm the page cache
            for name, box in boxes.items():
                first, kept = first_and_kept(box)
                if n >= 5:
                    samples[name][0].append(first)
                    samples[name][1].append(kept)
    finally:
        for box in boxes.values():
            box.close()
        for state in states:
            shutil.rmtree(state, ignore_errors=True)
    return {
        name: {"first": summary(firsts), "kept": summary(kepts)}
        for name, (firsts, kepts) in samples.items()
    }


def print_first(results: dict, runs: int) -> None:
    print(f"warm mode, {runs} instances per runtime, one after the other; ms")
    print(f"{'':34} {'p50':>8} {'p95':>8}")
    for name, figures in results.items():
        for label, key in (("first activation", "first"), ("next step, kept", "kept")):
            row = f"{name}: {label}"
            print(f"{row:34} {figures[key]['p50_ms']:8.2f} {figures[key]['p95_ms']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first", action="store_true", help="warm first activations only")
    parser.add_argument(
        "--baseline-runtime", type=Path, help="with --first: another runtime dir, alternated"
    )
    args = parser.parse_args()
    if args.first:
        print_first(measure_first(max(args.runs, 10), args.baseline_runtime), max(args.runs, 10))
        return
    results = measure(max(args.runs, 10), max(args.threads, 1))
    fresh, warm = results["fresh"], results["warm"]
    print(f"sandbox modes side by side; {args.threads} threads for activations/s\n")
    print(f"{'':34} {'fresh':>10} {'warm':>10} {'warm gain':>10}")
    rows = (  # label, key, higher is better
        ("per-activation overhead p50 (ms)", "p50_ms", False),
        ("per-activation overhead p95 (ms)", "p95_ms", False),
        ("10-step workflow, 11 acts (ms)", "workflow_10_steps_ms", False),
        ("... in a kept child (ms)", "workflow_10_steps_kept_ms", False),
        ("activations/s", "activations_per_second", True),
    )
    for label, key, higher_is_better in rows:
        better, worse = (warm[key], fresh[key]) if higher_is_better else (fresh[key], warm[key])
        gain = better / worse if worse else float("nan")
        print(f"{label:34} {fresh[key]:10.1f} {warm[key]:10.1f} {gain:9.1f}x")
    met = warm["activations_per_second"] >= STEPS_PER_SECOND_GOAL
    print(
        f"\nwarm activations/s {warm['activations_per_second']:.0f} "
        f"(goal >= {STEPS_PER_SECOND_GOAL:.0f}): {'met' if met else 'missed'}"
    )


if __name__ == "__main__":
    main()
