"""Stepwell's Prometheus metrics: every definition in one place, in multiprocess mode.

Each uvicorn, Celery and clock process writes its values to its own files in
PROMETHEUS_MULTIPROC_DIR (STEPWELL_VAR_DIR/metrics unless it is set), and a scrape of
/metrics merges them all, so the figures are the machine's, not one process's.

Recording a value is a few microseconds and never a query: the engine's hot path only
calls the helpers below. Labels are few and bounded (outcomes, sandbox modes, failure
kinds, route templates), never an id.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

from lib.env import var_dir
from lib.processes import pid_alive

CHECKOUT = Path(__file__).resolve().parent.parent


def use_multiprocess_dir() -> str:
    """Point prometheus-client at the machine's directory, made if need be."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(var_dir(CHECKOUT) / "metrics")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    share_with_state_owner(path)
    # The library picks its mode from the environment when first imported, which may be
    # before this ran (the settings import the sandbox, which imports this module); the
    # metrics below are made after this line, so they all get the multiprocess values.
    values.ValueClass = values.get_value_class()
    return path


def share_with_state_owner(path: str) -> None:
    """A worker runs as root (nsjail), web and clock as the state directory's owner: if
    root made the directory, it goes to that owner, or they could not write their files
    there (root's own files stay readable to them)."""
    if os.geteuid() != 0:
        return
    parent = os.stat(os.path.dirname(os.path.abspath(path)))
    if os.stat(path).st_uid != parent.st_uid:
        os.chown(path, parent.st_uid, parent.st_gid)


DIRECTORY = use_multiprocess_dir()

# Seconds: from a millisecond step to a step that ran into its timeout.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
# Seconds late or waiting: the clock sweeps every 0.25 s, so most land under a second.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)
OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

ACTIVATIONS = Counter(
    "stepwell_activations",
    "Activations run, by how the sandbox answered (ok, timed_out, sandbox_failure, ...)",
    ["outcome", "sandbox_mode"],
)
STEPS = Counter(
    "stepwell_steps",
    "Step outcomes recorded: complete, failed (an attempt), sleep, wait, start_workflow, "
    "wait_workflow, or the sandbox status that stopped the step",
    ["outcome", "sandbox_mode"],
)
INSTANCES_FINISHED = Counter(
    "stepwell_instances_finished", "Instances that ended, by their final status", ["status"]
)
STEP_SECONDS = Histogram(
    "stepwell_step_duration_seconds",
    "Wall time of an activation inside the sandbox (replay and the step it ran)",
    ["sandbox_mode"],
    buckets=STEP_BUCKETS,
)
OVERHEAD_SECONDS = Histogram(
    "stepwell_activation_overhead_seconds",
    "An activation's time outside the sandbox: starting it and recording its outcome",
    ["sandbox_mode"],
    buckets=OVERHEAD_BUCKETS,
)
QUEUE_LAG = Histogram(
    "stepwell_queue_lag_seconds",
    "From the moment an instance was due (next_run_at) to its claim by a worker",
    buckets=LAG_BUCKETS,
)
TIMER_LATENESS = Histogram(
    "stepwell_timer_lateness_seconds",
    "From a timer's wake_at to its resolution: sleep, retry (backoff) or timeout (a wait)",
    ["kind"],
    buckets=LAG_BUCKETS,
)
LEASE_EXPIRIES = Counter(
    "stepwell_lease_expiries",
    "Outcomes dropped because the activation's lease lapsed and was taken over",
)
LEASE_RECOVERIES = Counter(
    "stepwell_lease_recoveries",
    "Claims of an instance whose previous lease had lapsed (its worker died or hung)",
)
SANDBOX_FAILURES = Counter(
    "stepwell_sandbox_failures",
    "Activations the sandbox did not run to an answer, by kind (timed_out, memory_exceeded, "
    "output_too_large, killed, error, sandbox_failure, busy, engine)",
    ["kind"],
)
WARM_JAILS = Gauge(
    "stepwell_warm_jails",
    "Warm jails alive on this machine (processes that died no longer count)",
    multiprocess_mode="livesum",
)
WARM_JAILS_BY_PROCESS = Gauge(
    "stepwell_warm_jails_by_process",
    "Warm jails alive, per worker process (label pid)",
    multiprocess_mode="liveall",
)
WARM_JAIL_START_SECONDS = Histogram(
    "stepwell_warm_jail_start_seconds",
    "Time to start a warm jail (spawn, the tenant's import, the zygote ready), started ones only",
    buckets=STEP_BUCKETS,
)
WARM_FALLBACKS = Counter(
    "stepwell_warm_fallbacks",
    "Warm-mode activations run in a fresh jail instead, by why: busy (pool full, all "
    "busy), starting (the jail of that code is starting in the background), no_slot "
    "(the machine's warm slots taken), failed (the jail would not start), "
    "cold (a recent failure of that code)",
    ["reason"],
)
WARM_SPARES = Gauge(
    "stepwell_warm_spare_jails",
    "Spare warm jails launched ahead and waiting for a worker's next miss, on this machine",
    multiprocess_mode="livesum",
)
WARM_SPARE_ENDS = Counter(
    "stepwell_warm_spare_jail_ends",
    "Spare warm jails, by what became of them: bound (to the tenant of a miss), unfit "
    "(other limits, or its zygote gone), dropped (its slot needed), expired (idle too long)",
    ["end"],
)
HTTP_REQUESTS = Counter(
    "stepwell_http_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "stepwell_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["route"],
    buckets=(*OVERHEAD_BUCKETS[:-1], 2.5, 5, 10),
)
WEBHOOK_DELIVERIES = Counter(
    "stepwell_webhook_deliveries",
    "Webhook delivery attempts, by result (delivered, failed, refused, ...)",
    ["result"],
)
RETENTION_DELETED = Counter(
    "stepwell_retention_deleted_instances",
    "Finished instances deleted by the retention sweep (with their steps and events)",
)


# Series for the label values known in advance exist from the start, at 0, so that a
# dashboard's rate() and a missing-series alert see them before the first event.
SANDBOX_FAILURE_KINDS = (
    "timed_out",
    "memory_exceeded",
    "output_too_large",
    "killed",
    "error",
    "sandbox_failure",
    "busy",
    "engine",
)
WARM_FALLBACK_REASONS = ("busy", "starting", "no_slot", "failed", "cold")
WARM_SPARE_END_KINDS = ("bound", "unfit", "dropped", "expired")
TIMER_KINDS = ("sleep", "retry", "timeout")
WEBHOOK_RESULTS = ("delivered", "failed")
for _kind in SANDBOX_FAILURE_KINDS:
    SANDBOX_FAILURES.labels(_kind)
for _reason in WARM_FALLBACK_REASONS:
    WARM_FALLBACKS.labels(_reason)
for _end in WARM_SPARE_END_KINDS:
    WARM_SPARE_ENDS.labels(_end)
for _kind in TIMER_KINDS:
    TIMER_LATENESS.labels(_kind)
for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)


def webhook_delivered(result: str) -> None:
    """Count one webhook delivery attempt; `result` is a short fixed word, never a URL."""
    WEBHOOK_DELIVERIES.labels(result).inc()


def warm_jails_alive(count: int) -> None:
    WARM_JAILS.set(count)
    WARM_JAILS_BY_PROCESS.set(count)


def warm_jail_started(seconds: float) -> None:
    WARM_JAIL_START_SECONDS.observe(seconds)


def warm_fallback(reason: str) -> None:
    """Count a warm-mode activation run fresh; `reason` is one of WARM_FALLBACK_REASONS."""
    WARM_FALLBACKS.labels(reason).inc()


def warm_spares_waiting(count: int) -> None:
    WARM_SPARES.set(count)


def warm_spare_ended(end: str) -> None:
    """Count a spare warm jail's end; `end` is one of WARM_SPARE_END_KINDS."""
    WARM_SPARE_ENDS.labels(end).inc()


def process_ended(pid: int | None = None) -> None:
    """Drop the live gauges of a process that ended (its counters stay counted)."""
    multiprocess.mark_process_dead(pid or os.getpid(), DIRECTORY)


def forget_dead_processes(path: str) -> None:
    """Live gauges of processes that died without saying so (SIGKILL, OOM) stop counting.

    A process's files are named for its pid; the directory is per machine, so the pid
    can be checked here.
    """
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(name).rsplit("_", 1)[-1].removesuffix(".db")
        if pid.isdigit() and not pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)


def scrape(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text exposition of every process's metrics, merged, plus `extra` collectors
    (computed now, by the scraping process); (body, content type)."""
    registry = CollectorRegistry()
    forget_dead_processes(DIRECTORY)
    multiprocess.MultiProcessCollector(registry, path=DIRECTORY)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
