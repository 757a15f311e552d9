"""Recording what one activation reported, and deciding what happens next.

Everything here runs in one transaction holding the instance row, and only for
the activation that still holds the lease: an outcome from a worker whose lease
was taken over (or from before a pause, terminate or restart) is dropped.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from execution import dispatch
from execution.models import Instance, Step, Workflow
from execution.progress import record_event, step_summary
from execution.sandbox import SandboxResult, Status

if TYPE_CHECKING:
    from execution.engine import Activation

log = logging.getLogger(__name__)

SANDBOX_ERROR_TYPES = {
    Status.TIMED_OUT: "StepTimeout",
    Status.MEMORY_EXCEEDED: "MemoryLimitExceeded",
    Status.OUTPUT_TOO_LARGE: "OutputTooLarge",
    Status.KILLED: "Killed",
    Status.ERROR: "SandboxError",
}
OUTCOME_KINDS = {
    "step",
    "sleep",
    "wait",
    "start_workflow",
    "wait_workflow",
    "complete",
    "error",
    "nondeterminism",
}
DEFAULT_RETRIES = {"limit": 3, "delay_seconds": 1.0, "backoff": "exponential"}


class InvalidOutcome(ValueError):
    pass


def record(activation: Activation, result: SandboxResult) -> None:
    from execution.engine import release

    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update(of=("self",))
            .select_related("tenant__quota_row")
            .get(pk=activation.instance_pk)
        )
        if instance.lease_owner != activation.token or instance.generation != activation.generation:
            log.info("dropping a stale outcome for instance %s", instance.pk)
            return
        if result.status == Status.SANDBOX_FAILURE:
            log.error("sandbox failure on instance %s: %s", instance.pk, result.error)
            release(instance.pk, activation.token, retry_in=timedelta(seconds=5))
            return
        if result.status != Status.OK:
            record_sandbox_violation(instance, activation, result)
        else:
            try:
                outcome = check_outcome(result.result)
                apply_outcome(instance, activation, outcome)
            except InvalidOutcome as exc:
                error_instance(instance, {"type": "InvalidOutcome", "message": str(exc)})
        release(instance.pk, activation.token)
        if not dispatch.is_kept(instance.pk):
            # The place this activation held is free: another due instance may take it.
            tenant_id = instance.tenant_id
            transaction.on_commit(lambda: dispatch.fill(tenant_id))


def check_outcome(outcome: Any) -> dict:
    """The runtime is inside the jail, so its answer is untrusted input."""
    if not isinstance(outcome, dict) or outcome.get("kind") not in OUTCOME_KINDS:
        raise InvalidOutcome("the sandbox runtime answered with something that is not an outcome")
    kind = outcome["kind"]
    if kind in ("step", "sleep", "wait", "start_workflow", "wait_workflow"):
        index, name = outcome.get("index"), outcome.get("name")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InvalidOutcome("the outcome's step index is not a non-negative integer")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise InvalidOutcome("the outcome's step name is not a string of 1 to 200 characters")
    return outcome


def apply_outcome(instance: Instance, activation: Activation, outcome: dict) -> None:
    kind = outcome["kind"]
    if kind == "complete":
        complete_instance(instance, outcome.get("output"))
        return
    if kind in ("error", "nondeterminism"):
        error_instance(instance, clean_error(outcome.get("error")))
        return
    index = outcome["index"]
    existing = Step.objects.filter(instance=instance, index=index).first()
    if existing is not None and existing.status in Step.RESOLVED_STATUSES:
        log.info("step %s of instance %s is already recorded; dropping", index, instance.pk)
        dispatch.run_now(instance)
        return
    quota = instance.tenant.quota
    if index >= quota.steps_per_instance:
        error_instance(
            instance,
            {
                "type": "StepLimitExceeded",
                "message": f"the instance reached its limit of {quota.steps_per_instance} steps",
            },
        )
        return
    handler = {
        "step": record_do,
        "sleep": record_sleep,
        "wait": record_wait,
        "start_workflow": record_start_workflow,
        "wait_workflow": record_wait_workflow,
    }[kind]
    handler(instance, existing, outcome)


def new_step(instance: Instance, existing: Step | None, outcome: dict, kind: str) -> Step:
    if existing is not None:
        existing.name = outcome["name"]
        return existing
    return Step(instance=instance, index=outcome["index"], name=outcome["name"], kind=kind)


def record_do(instance: Instance, existing: Step | None, outcome: dict) -> None:
    step = new_step(instance, existing, outcome, Step.Kind.DO)
    now = timezone.now()
    duration = timedelta(milliseconds=float(outcome.get("duration_ms") or 0))
    step.attempts += 1
    step.logs = str(outcome.get("logs") or "")[: instance.tenant.quota.step_output_bytes]
    step.config = {
        "retries": outcome.get("retries") or DEFAULT_RETRIES,
        "timeout_seconds": outcome.get("timeout_seconds"),
    }
    if step.status != Step.Status.RUNNING:  # not announced while it ran
        step.started_at = now - duration
    announced = step.status == Step.Status.RUNNING
    if outcome.get("status") == "complete":
        output = outcome.get("output")
        too_big = json_size(output) > instance.tenant.quota.step_result_bytes
        if not too_big:
            step.status, step.output, step.error, step.finished_at = "complete", output, None, now
            step.wake_at = None
            is_new = step.pk is None
            step.save()
            if is_new and not announced:
                record_event(instance, "step.started", step=step_summary(step))
            publish_logs(instance, step)
            record_event(instance, "step.completed", step=step_summary(step))
            dispatch.run_now(instance)
            return
        outcome = {
            **outcome,
            "retryable": False,
            "error": {
                "type": "ResultTooLarge",
                "message": f"the step's result is over the limit of "
                f"{instance.tenant.quota.step_result_bytes} bytes",
            },
        }
    fail_attempt(instance, step, clean_error(outcome.get("error")), bool(outcome.get("retryable")))


def fail_attempt(instance: Instance, step: Step, error: dict, retryable: bool) -> None:
    """One attempt of a do step failed: retry after its backoff, or give up."""
    now = timezone.now()
    retries = (step.config or {}).get("retries") or DEFAULT_RETRIES
    step.error = error
    step.finished_at = now
    is_new = step.pk is None
    if retryable and step.attempts <= int(retries.get("limit", 3)):
        step.status = Step.Status.FAILED
        step.wake_at = now + retry_delay(retries, step.attempts)
        step.save()
        if is_new:
            record_event(instance, "step.started", step=step_summary(step))
        publish_logs(instance, step)
        record_event(instance, "step.failed", step=step_summary(step), error=error)
        record_event(
            instance, "step.retrying", step=step_summary(step), retry_at=step.wake_at.isoformat()
        )
        if step.wake_at <= now:
            dispatch.run_now(instance)
        else:
            dispatch.run_at(instance, step.wake_at)
        return
    step.status = Step.Status.ERRORED
    step.wake_at = None
    step.save()
    if is_new:
        record_event(instance, "step.started", step=step_summary(step))
    publish_logs(instance, step)
    record_event(instance, "step.failed", step=step_summary(step), error=error)
    # The next activation replays this step as a StepError raised inside run().
    dispatch.run_now(instance)


def retry_delay(retries: dict, attempt: int) -> timedelta:
    delay = float(retries.get("delay_seconds", 1.0))
    backoff = retries.get("backoff", "exponential")
    if backoff == "linear":
        seconds = delay * attempt
    elif backoff == "exponential":
        seconds = delay * 2 ** (attempt - 1)
    else:
        seconds = delay
    return timedelta(seconds=min(seconds, 7 * 24 * 3600))


def record_sleep(instance: Instance, existing: Step | None, outcome: dict) -> None:
    from execution.engine import set_status

    step = new_step(instance, existing, outcome, Step.Kind.SLEEP)
    until = parse_time(outcome.get("until"))
    step.status, step.wake_at, step.attempts = Step.Status.SLEEPING, until, 1
    step.save()
    record_event(instance, "step.sleeping", step=step_summary(step), until=until.isoformat())
    set_status(instance, Instance.Status.SLEEPING)
    if until <= timezone.now():
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, until)


def record_wait(instance: Instance, existing: Step | None, outcome: dict) -> None:
    from execution.engine import set_status

    step = new_step(instance, existing, outcome, Step.Kind.WAIT_FOR_EVENT)
    event_type = outcome.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidOutcome("wait_for_event needs an event type")
    step.event_type = event_type[:200]
    step.status, step.attempts = Step.Status.WAITING, 1
    step.wake_at = timezone.now() + timedelta(seconds=seconds_of(outcome.get("timeout_seconds")))
    step.config = {"timeout_seconds": outcome.get("timeout_seconds")}
    step.save()
    record_event(instance, "step.waiting", step=step_summary(step), event_type=step.event_type)
    set_status(instance, Instance.Status.WAITING)
    # An event sent before the wait counts.
    if instance.events.filter(type=step.event_type, consumed_by__isnull=True).exists():
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, step.wake_at)


def record_start_workflow(instance: Instance, existing: Step | None, outcome: dict) -> None:
    from execution.workflows import StartError, start_instance

    step = new_step(instance, existing, outcome, Step.Kind.START_WORKFLOW)
    step.attempts = 1
    step.finished_at = timezone.now()
    workflow = (
        Workflow.objects.for_tenant(instance.tenant)
        .filter(name=str(outcome.get("workflow")))
        .first()
    )
    try:
        if workflow is None:
            raise StartError(f"no workflow named {outcome.get('workflow')!r}")
        child, _ = start_instance(
            workflow,
            payload=outcome.get("payload") or {},
            key=outcome.get("instance_id") or f"{instance.key}-{step.index}",
            parent=instance,
        )
        step.status, step.output = Step.Status.COMPLETE, child.key
    except StartError as exc:
        step.status = Step.Status.ERRORED
        step.error = {"type": "StartWorkflowError", "message": str(exc)}
    step.save()
    record_event(instance, "step.started", step=step_summary(step))
    kind = "step.completed" if step.status == Step.Status.COMPLETE else "step.failed"
    record_event(instance, kind, step=step_summary(step))
    dispatch.run_now(instance)


def record_wait_workflow(instance: Instance, existing: Step | None, outcome: dict) -> None:
    from execution.engine import set_status

    step = new_step(instance, existing, outcome, Step.Kind.WAIT_FOR_WORKFLOW)
    step.attempts = 1
    target = (
        Instance.objects.for_tenant(instance.tenant)
        .filter(key=str(outcome.get("instance_id")))
        .first()
    )
    step.target = target
    step.status = Step.Status.WAITING
    step.wake_at = timezone.now() + timedelta(seconds=seconds_of(outcome.get("timeout_seconds")))
    step.save()
    record_event(
        instance,
        "step.waiting",
        step=step_summary(step),
        instance_id=str(outcome.get("instance_id")),
    )
    set_status(instance, Instance.Status.WAITING)
    if target is None or target.is_terminal:
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, step.wake_at)


def record_sandbox_violation(
    instance: Instance, activation: Activation, result: SandboxResult
) -> None:
    """The jail was stopped (memory, time, output, a signal) before the runtime answered."""
    error = {
        "type": SANDBOX_ERROR_TYPES.get(result.status, "SandboxError"),
        "message": (result.error or {}).get("message", str(result.status)),
    }
    intent = step_intent(result)
    step = None
    if intent is not None:
        existing = Step.objects.filter(instance=instance, index=intent["index"]).first()
        if existing is not None and existing.status in Step.RESOLVED_STATUSES:
            error_instance(instance, error)
            return
        step = new_step(instance, existing, intent, Step.Kind.DO)
        step.config = {
            "retries": intent.get("retries") or DEFAULT_RETRIES,
            "timeout_seconds": intent.get("timeout_seconds"),
        }
    elif activation.pending is not None:
        step = Step.objects.get(pk=activation.pending.pk)
    if step is None:
        # The code failed outside any step (at import, or between steps).
        error_instance(instance, error)
        return
    step.attempts += 1
    step.started_at = timezone.now() - timedelta(seconds=result.wall_seconds)
    step.logs = (result.stdout + result.stderr)[-instance.tenant.quota.step_output_bytes :]
    retryable = result.status != Status.OUTPUT_TOO_LARGE
    fail_attempt(instance, step, error, retryable)


def step_intent(result: SandboxResult) -> dict | None:
    """The do step the runtime announced before running it, if it got that far."""
    for item in reversed(getattr(result, "progress", None) or []):
        if isinstance(item, dict) and item.get("kind") == "intent":
            try:
                return check_outcome({**item, "kind": "step"})
            except InvalidOutcome:
                return None
    return None


def complete_instance(instance: Instance, output: Any) -> None:
    from execution.engine import set_status

    if json_size(output) > instance.tenant.quota.step_result_bytes:
        error_instance(
            instance,
            {
                "type": "ResultTooLarge",
                "message": f"the workflow's output is over the limit of "
                f"{instance.tenant.quota.step_result_bytes} bytes",
            },
        )
        return
    set_status(instance, Instance.Status.COMPLETE, output=output, error=None)


def error_instance(instance: Instance, error: dict) -> None:
    from execution.engine import set_status

    set_status(instance, Instance.Status.ERRORED, error=error)


def publish_logs(instance: Instance, step: Step) -> None:
    lines = [line for line in step.logs.splitlines() if line.strip()][:200]
    for line in lines:
        record_event(instance, "step.log", step=step_summary(step), line=line[:2000])


def clean_error(error: Any) -> dict:
    if not isinstance(error, dict):
        return {"type": "Error", "message": "the step failed without an error description"}
    clean = {
        "type": str(error.get("type") or "Error")[:200],
        "message": str(error.get("message") or "")[:4000],
    }
    if error.get("traceback"):
        clean["traceback"] = str(error["traceback"])[:16000]
    for key in ("index", "recorded", "new"):
        if key in error:
            clean[key] = error[key]
    return clean


def json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return 2**62


def seconds_of(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidOutcome("a timeout in the outcome is not a number") from None
    if not 0 <= seconds <= 366 * 24 * 3600:
        raise InvalidOutcome("a timeout in the outcome is out of range")
    return seconds


def parse_time(value: Any):
    from datetime import datetime

    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidOutcome("the sleep's wake time is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise InvalidOutcome("the sleep's wake time has no time zone")
    return when
