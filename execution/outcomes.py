"""Recording what one activation reported, and deciding what happens next.

Everything here runs in one transaction holding the instance row, and only for
the activation that still holds the lease: an outcome from a worker whose lease
was taken over (or from before a pause, terminate or restart) is dropped. The
common outcomes take the fast paths of fast_records; every other goes through
record_any to its kind's handler (kinds).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from execution.activation import Activation, Next
from execution.fast_records import is_plain_end, plain_completion_growth, record_completed_step
from execution.kinds import (
    apply_outcome,
    error_instance,
    fail_attempt,
    grow_history,
    history_size,
    new_step,
    step_config,
)
from execution.lifecycle import due, leases, records
from execution.models import Instance, Step
from execution.outcome_checks import STEP_KINDS, InvalidOutcome, check_outcome
from execution.sandbox import SandboxResult, Status
from execution.storable import escaped
from lib import metrics

log = logging.getLogger(__name__)

SANDBOX_ERROR_TYPES = {
    Status.TIMED_OUT: "StepTimeout",
    Status.MEMORY_EXCEEDED: "MemoryLimitExceeded",
    Status.OUTPUT_TOO_LARGE: "OutputTooLarge",
    Status.KILLED: "Killed",
    Status.ERROR: "SandboxError",
}
# Sandbox failures (and engine errors) in a row before the instance errors: a jail
# that cannot run the instance's code must not be retried every few seconds forever.
SANDBOX_FAILURE_LIMIT = 3
SANDBOX_RETRY = timedelta(seconds=5)


def record(
    activation: Activation, result: SandboxResult, *, keep: bool = False
) -> Activation | Next:
    """Record the activation's outcome. With `keep`, the worker goes on with the instance
    if it is ready again: returns the next Activation (lease kept), or Next.AGAIN (claim
    it again). Returns Next.DONE when the instance is not the worker's to run now."""
    outcome = checked(result)
    count_step(activation, result, outcome)
    if isinstance(outcome, dict):
        grown = plain_completion_growth(activation, outcome)
        if grown is not None:
            then = outcome.get("then")
            if then and activation.ran_ahead_as_recorded and is_plain_end(activation, then):
                return record_completed_end(activation, outcome, grown, then["output"])
            return record_completed_step(activation, outcome, grown, keep=keep)
        if is_plain_end(activation, outcome):
            record_end(activation, outcome["output"])
            return Next.DONE
    with due.kept(activation.instance_pk if keep else None) as kept:
        record_any(activation, result, outcome)
    return Next.AGAIN if kept.ready else Next.DONE


def record_completed_end(activation: Activation, outcome: dict, grown: int, output) -> Next:
    """A completed step and the end of run() right after it (its kept child ran ahead to
    it), in one transaction: one commit where the step and then the end took two, and no
    resume of the child in between. The step is recorded under the lease kept, the end
    gives it back; if the lease was gone, neither is."""
    with transaction.atomic():
        following = record_completed_step(activation, outcome, grown, keep=True)
        if isinstance(following, Activation):
            record_end(following, output)
    return Next.DONE


def step_outcome(result: SandboxResult, outcome: dict | InvalidOutcome | None) -> str | None:
    """The label of what the activation's step came to; None if it ran no step (it ended
    the instance, or the sandbox never ran it)."""
    if outcome is None:
        return None if result.status in (Status.SANDBOX_FAILURE, Status.BUSY) else result.status
    if isinstance(outcome, InvalidOutcome):
        return "invalid"
    kind = outcome["kind"]
    if kind == "step":
        return outcome["status"]  # complete, or failed (an attempt)
    return kind if kind in STEP_KINDS else None


def count_step(activation: Activation, result: SandboxResult, outcome) -> None:
    label = step_outcome(result, outcome)
    if label is None:
        return
    mode = activation.sandbox_mode
    metrics.STEPS.labels(label, mode).inc()
    if isinstance(outcome, dict) and outcome["kind"] == "step":
        activation.step_seconds = outcome["duration_ms"] / 1000
        metrics.STEP_SECONDS.labels(mode).observe(activation.step_seconds)


def checked(result: SandboxResult) -> dict | InvalidOutcome | None:
    """The checked outcome of a run that answered, or why it is invalid (else None)."""
    if result.status != Status.OK:
        return None
    try:
        return check_outcome(result.result)
    except InvalidOutcome as exc:
        return exc


def record_any(
    activation: Activation, result: SandboxResult, outcome: dict | InvalidOutcome | None
) -> None:
    if result.status in (Status.SANDBOX_FAILURE, Status.BUSY):
        message = (result.error or {}).get("message") or "the sandbox failed"
        record_failure(activation, str(message), counts=result.status != Status.BUSY)
        return
    with leased(activation) as instance:
        if instance is None:
            return
        if instance.sandbox_failures:  # a success ends the run of failures
            instance.sandbox_failures = 0
            Instance.objects.filter(pk=instance.pk).update(sandbox_failures=0)
        if outcome is None:
            record_sandbox_violation(instance, activation, result)
        elif isinstance(outcome, InvalidOutcome):
            error_instance(instance, {"type": "InvalidOutcome", "message": str(outcome)})
        else:
            apply_outcome(instance, activation, outcome)


@contextlib.contextmanager
def leased(activation: Activation):
    """The instance, locked, if the activation's lease still holds it (else None); its
    lease given back when the block ends, in the same transaction."""
    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update(of=("self",), no_key=True)
            .select_related("tenant__quota_row")
            .get(pk=activation.instance_pk)
        )
        if instance.lease_owner != activation.token or instance.generation != activation.generation:
            if instance.lease_owner != activation.token:
                metrics.LEASE_EXPIRIES.inc()  # it lapsed while the step ran, and was taken
            log.info("dropping a stale outcome for instance %s", instance.pk)
            yield None
            return
        yield instance
        if instance.lease_owner == activation.token:
            leases.release(instance.pk, activation.token)
        if not due.is_kept(instance.pk):
            # The place this activation held is free: another due instance may take it.
            tenant_id = instance.tenant_id
            transaction.on_commit(lambda: due.fill(tenant_id))


def record_failure(activation: Activation, message: str, *, counts: bool = True) -> None:
    """The sandbox (or the engine) failed to run the activation: try again shortly, until
    SANDBOX_FAILURE_LIMIT failures in a row, then error the instance. A failure that does
    not count (a machine too busy to give a slot) is only tried again."""
    message = escaped(message)[:2000]
    with leased(activation) as instance:
        if instance is None:
            return
        log.error("sandbox failure on instance %s: %s", instance.pk, message)
        failures = instance.sandbox_failures + counts
        if counts and failures >= SANDBOX_FAILURE_LIMIT:
            text = (
                f"the sandbox kept failing: {failures} activations in a row failed; "
                f"the last: {message}"
            )
            error_instance(instance, {"type": "SandboxFailure", "message": text})
            return
        if counts:
            Instance.objects.filter(pk=instance.pk).update(sandbox_failures=failures)
        leases.retry_later(instance, activation.token, SANDBOX_RETRY)


def record_error(activation: Activation, error: dict) -> None:
    """Error the instance without running it (what it holds forbids another activation)."""
    with leased(activation) as instance:
        if instance is not None:
            error_instance(instance, error)


def record_end(activation: Activation, output) -> None:
    """The end of run(), within the limits: the instance completes if the lease holds."""
    if not records.finish_leased(activation, output):
        log.info("dropping a stale outcome for instance %s", activation.instance_pk)


def record_sandbox_violation(
    instance: Instance, activation: Activation, result: SandboxResult
) -> None:
    """The jail was stopped (memory, time, output, a signal) before the runtime answered."""
    error = {
        "type": SANDBOX_ERROR_TYPES.get(result.status, "SandboxError"),
        "message": escaped(str((result.error or {}).get("message", result.status)))[:4000],
    }
    intent = step_intent(result)
    step = None
    if intent is not None:
        existing = Step.objects.filter(instance=instance, index=intent["index"]).first()
        if existing is not None and existing.status in Step.RESOLVED_STATUSES:
            error_instance(instance, error)
            return
        step = new_step(instance, existing, intent, Step.Kind.DO)
        step.config = step_config(intent)
    elif activation.pending is not None:
        step = Step.objects.get(pk=activation.pending.pk)
    if step is None:
        # The code failed outside any step (at import, or between steps).
        error_instance(instance, error)
        return
    before = history_size(step)  # as stored: a row read in full, or a new one
    announced = step.status == Step.Status.RUNNING
    step.begin_attempt()
    step.attempts += 1
    step.started_at = timezone.now() - timedelta(seconds=result.wall_seconds)
    limit = instance.tenant.quota.step_output_bytes
    step.logs = escaped((result.stdout + result.stderr)[-limit:])[-limit:]
    retryable = result.status != Status.OUTPUT_TOO_LARGE
    fail_attempt(instance, step, error, retryable, announced=announced)
    grow_history(instance, step, before)


def step_intent(result: SandboxResult) -> dict | None:
    """The do step the runtime announced before running it, if it got that far."""
    for item in reversed(getattr(result, "progress", None) or []):
        if isinstance(item, dict) and item.get("kind") == "intent":
            try:
                return check_outcome({**item, "kind": "step"})
            except InvalidOutcome:
                return None
    return None
