"""What each kind of outcome records: a do step's attempt, a sleep, a wait for an event,
a child started or awaited, the instance's end; and the instance's history quota.

Each handler runs in outcomes.leased's transaction, for the activation that holds the
lease, with the outcome checked already (outcome_checks).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone

from execution.activation import Activation
from execution.errors import StartError
from execution.lifecycle import due, states
from execution.models import Instance, Step, Workflow
from execution.outcome_checks import child_key, clean_error, duration, json_size, stored_retries
from execution.progress import record_event, started, step_summary
from execution.workflows import start_instance

log = logging.getLogger(__name__)


def history_error(limit: int) -> dict:
    return {
        "type": "HistoryTooLarge",
        "message": f"the instance's history (its steps' recorded results, errors and logs) "
        f"is over its limit of {limit} bytes",
    }


def history_size(step: Step | None) -> int:
    """What a step row adds to its instance's history: the JSON size of its result,
    error and earlier attempts, and the length of its logs."""
    if step is None:
        return 0
    size = 0 if step.output is None else json_size(step.output)
    size += 0 if step.error is None else json_size(step.error)
    size += json_size(step.earlier_attempts) if step.earlier_attempts else 0
    return size + len(step.logs)


def grow_history(instance: Instance, step: Step | None, before: int) -> None:
    """Count what recording `step` added to the instance's history; error the instance
    if that takes it past its quota."""
    if step is None:
        return
    grown = history_size(step) - before
    if grown:
        Instance.objects.filter(pk=instance.pk).update(history_bytes=F("history_bytes") + grown)
        instance.history_bytes += grown
    limit = instance.tenant.quota.history_bytes
    if instance.history_bytes > limit and not instance.is_terminal:
        error_instance(instance, history_error(limit))


def apply_outcome(instance: Instance, activation: Activation, outcome: dict) -> None:
    kind = outcome["kind"]
    if kind == "complete":
        complete_instance(instance, outcome["output"])
        return
    if kind in ("error", "nondeterminism"):
        error_instance(instance, outcome["error"])
        return
    index = outcome["index"]
    existing = Step.objects.filter(instance=instance, index=index).first()
    if existing is not None and existing.status in Step.RESOLVED_STATUSES:
        log.info("step %s of instance %s is already recorded; dropping", index, instance.pk)
        due.make_due(instance)
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
    before = history_size(existing)
    grow_history(instance, handler(instance, existing, outcome), before)


def new_step(instance: Instance, existing: Step | None, outcome: dict, kind: str) -> Step:
    if existing is not None:
        existing.name = outcome["name"]
        return existing
    return Step(instance=instance, index=outcome["index"], name=outcome["name"], kind=kind)


def step_config(outcome: dict) -> dict:
    return {"retries": outcome["retries"], "timeout_seconds": outcome["timeout_seconds"]}


def record_do(instance: Instance, existing: Step | None, outcome: dict) -> Step:
    step = new_step(instance, existing, outcome, Step.Kind.DO)
    now = timezone.now()
    step.begin_attempt()
    step.attempts += 1
    step.logs = outcome["logs"][: instance.tenant.quota.step_output_bytes]
    step.config = step_config(outcome)
    if step.status != Step.Status.RUNNING:  # not announced while it ran
        step.started_at = now - duration(outcome)
    announced = step.status == Step.Status.RUNNING
    if outcome["status"] == "complete":
        output = outcome["output"]
        too_big = json_size(output) > instance.tenant.quota.step_result_bytes
        if not too_big:
            step.status, step.output, step.error, step.finished_at = "complete", output, None, now
            step.wake_at = None
            step.save()
            if not announced:
                record_event(instance, "step.started", **started(step))
            publish_logs(instance, step)
            record_event(instance, "step.completed", step=step_summary(step))
            due.make_due(instance)
            return step
        outcome = {
            **outcome,
            "retryable": False,
            "error": {
                "type": "ResultTooLarge",
                "message": f"the step's result is over the limit of "
                f"{instance.tenant.quota.step_result_bytes} bytes",
            },
        }
    fail_attempt(instance, step, outcome["error"], outcome["retryable"], announced=announced)
    return step


def fail_attempt(
    instance: Instance, step: Step, error: dict, retryable: bool, *, announced: bool
) -> None:
    """One attempt of a do step failed: retry after its backoff, or give up. `announced`:
    its step.started went out when the attempt was shown running."""
    now = timezone.now()
    retries = stored_retries(step.config)
    step.error = error
    step.finished_at = now
    if retryable and step.attempts <= retries["limit"]:
        step.status = Step.Status.FAILED
        step.wake_at = now + retry_delay(retries, step.attempts)
        step.save()
        if not announced:
            record_event(instance, "step.started", **started(step))
        publish_logs(instance, step)
        record_event(instance, "step.failed", step=step_summary(step), error=error)
        record_event(
            instance, "step.retrying", step=step_summary(step), retry_at=step.wake_at.isoformat()
        )
        if step.wake_at <= now:
            due.make_due(instance)
        else:
            due.make_due_at(instance, step.wake_at)
        return
    step.status = Step.Status.ERRORED
    step.wake_at = None
    step.save()
    if not announced:
        record_event(instance, "step.started", **started(step))
    publish_logs(instance, step)
    record_event(instance, "step.failed", step=step_summary(step), error=error)
    # The next activation replays this step as a StepError raised inside run().
    due.make_due(instance)


def retry_delay(retries: dict, attempt: int) -> timedelta:
    delay = float(retries.get("delay_seconds", 1.0))
    backoff = retries.get("backoff", "exponential")
    # Attempts are at most MAX_RETRY_LIMIT + 1; the exponent is capped all the same.
    if backoff == "linear":
        seconds = delay * attempt
    elif backoff == "exponential":
        seconds = delay * 2.0 ** min(attempt - 1, 64)
    else:
        seconds = delay
    return timedelta(seconds=min(seconds, 7 * 24 * 3600))


def record_sleep(instance: Instance, existing: Step | None, outcome: dict) -> Step:

    step = new_step(instance, existing, outcome, Step.Kind.SLEEP)
    until = outcome["until"]
    step.status, step.wake_at, step.attempts = Step.Status.SLEEPING, until, 1
    step.save()
    record_event(instance, "step.sleeping", step=step_summary(step), until=until.isoformat())
    states.suspend_running(instance, Instance.Status.SLEEPING)
    if until <= timezone.now():
        due.make_due(instance)
    else:
        due.make_due_at(instance, until)
    return step


def record_wait(instance: Instance, existing: Step | None, outcome: dict) -> Step:

    step = new_step(instance, existing, outcome, Step.Kind.WAIT_FOR_EVENT)
    step.event_type = outcome["event_type"]
    step.status, step.attempts = Step.Status.WAITING, 1
    step.wake_at = timezone.now() + timedelta(seconds=outcome["timeout_seconds"])
    step.config = {"timeout_seconds": outcome["timeout_seconds"]}
    step.save()
    record_event(instance, "step.waiting", step=step_summary(step), event_type=step.event_type)
    states.suspend_running(instance, Instance.Status.WAITING)
    # An event sent before the wait counts.
    if instance.events.filter(type=step.event_type, consumed_by__isnull=True).exists():
        due.make_due(instance)
    else:
        due.make_due_at(instance, step.wake_at)
    return step


def record_start_workflow(instance: Instance, existing: Step | None, outcome: dict) -> Step:

    step = new_step(instance, existing, outcome, Step.Kind.START_WORKFLOW)
    step.attempts = 1
    step.finished_at = timezone.now()
    quota = instance.tenant.quota
    workflow = Workflow.objects.for_tenant(instance.tenant).filter(name=outcome["workflow"]).first()
    try:
        if outcome["refused"] is not None:
            raise StartError(outcome["refused"])
        if workflow is None:
            raise StartError(f"no workflow named {outcome['workflow']!r}")
        size = json_size(outcome["payload"])
        if size > quota.payload_bytes:
            raise StartError(
                f"the payload is {size} bytes; the limit is {quota.payload_bytes} bytes"
            )
        # Held to the starts per minute quota as the API's starts are: a workflow that
        # starts children in a loop is a client like any other.
        child, _ = start_instance(
            workflow,
            payload=outcome["payload"],
            key=outcome["instance_id"] or child_key(instance.key, step.index),
            parent=instance,
            rate=True,
        )
        step.status, step.output = Step.Status.COMPLETE, child.key
    except StartError as exc:
        step.status = Step.Status.ERRORED
        step.error = {"type": "StartWorkflowError", "message": str(exc)}
    step.save()
    record_event(instance, "step.started", **started(step))
    kind = "step.completed" if step.status == Step.Status.COMPLETE else "step.failed"
    record_event(instance, kind, step=step_summary(step))
    due.make_due(instance)
    return step


def record_wait_workflow(instance: Instance, existing: Step | None, outcome: dict) -> Step:

    step = new_step(instance, existing, outcome, Step.Kind.WAIT_FOR_WORKFLOW)
    step.attempts = 1
    target = Instance.objects.for_tenant(instance.tenant).filter(key=outcome["instance_id"]).first()
    step.target = target
    step.status = Step.Status.WAITING
    step.wake_at = timezone.now() + timedelta(seconds=outcome["timeout_seconds"])
    step.save()
    record_event(
        instance, "step.waiting", step=step_summary(step), instance_id=outcome["instance_id"]
    )
    states.suspend_running(instance, Instance.Status.WAITING)
    if target is None or target.is_terminal:
        due.make_due(instance)
    else:
        due.make_due_at(instance, step.wake_at)
    return step


def complete_instance(instance: Instance, output: Any) -> None:

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
    states.finish(instance, Instance.Status.COMPLETE, output=output, error=None)


def error_instance(instance: Instance, error: dict) -> None:

    states.finish(instance, Instance.Status.ERRORED, error=clean_error(error))


def log_lines(step: Step) -> list[str]:
    """The step's output as step.log events carry it: the first 200 non-blank lines."""
    return [line[:2000] for line in step.logs.splitlines() if line.strip()][:200]


def publish_logs(instance: Instance, step: Step) -> None:
    for line in log_lines(step):
        record_event(instance, "step.log", step=step_summary(step), line=line)
