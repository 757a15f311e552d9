"""Recording what one activation reported, and deciding what happens next.

Everything here runs in one transaction holding the instance row, and only for
the activation that still holds the lease: an outcome from a worker whose lease
was taken over (or from before a pause, terminate or restart) is dropped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from execution import dispatch
from execution.models import Instance, ProgressEvent, Step, Workflow
from execution.outcome_checks import (
    DEFAULT_RETRIES,
    InvalidOutcome,
    check_outcome,
    child_key,
    clean_error,
    duration,
    json_size,
    stored_retries,
)
from execution.progress import (
    event_message,
    numbered,
    record_event,
    send,
    step_summary,
    store_events,
)
from execution.sandbox import SandboxResult, Status
from execution.storable import escaped
from lib import rows

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
# Sandbox failures (and engine errors) in a row before the instance errors: a jail
# that cannot run the instance's code must not be retried every few seconds forever.
SANDBOX_FAILURE_LIMIT = 3
SANDBOX_RETRY = timedelta(seconds=5)
# The engine reads these here, where it always has.
__all__ = ["DEFAULT_RETRIES", "InvalidOutcome", "check_outcome"]


# record() returns this when the instance is ready again but its lease was given back.
AGAIN = object()


def record(activation: Activation, result: SandboxResult, *, keep: bool = False):
    """Record the activation's outcome. With `keep`, the worker goes on with the instance
    if it is ready again: returns the next Activation (lease kept), or AGAIN (claim it
    again). Returns None when the instance is not the worker's to run now."""
    outcome = checked(result)
    if isinstance(outcome, dict):
        grown = plain_completion_growth(activation, outcome)
        if grown is not None:
            return record_completed_step(activation, outcome, grown, keep=keep)
        if is_plain_end(activation, outcome):
            record_end_in_one_statement(activation, outcome["output"])
            return None
    with dispatch.kept(activation.instance_pk if keep else None) as kept:
        record_any(activation, result, outcome)
    return AGAIN if kept.ready else None


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
    with held(activation) as instance:
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
def held(activation: Activation):
    """The instance, locked, if the activation's lease still holds it (else None); its
    lease given back when the block ends, in the same transaction."""
    from execution.engine import release

    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update(of=("self",), no_key=True)
            .select_related("tenant__quota_row")
            .get(pk=activation.instance_pk)
        )
        if instance.lease_owner != activation.token or instance.generation != activation.generation:
            log.info("dropping a stale outcome for instance %s", instance.pk)
            yield None
            return
        yield instance
        if instance.lease_owner == activation.token:
            release(instance.pk, activation.token)
        if not dispatch.is_kept(instance.pk):
            # The place this activation held is free: another due instance may take it.
            tenant_id = instance.tenant_id
            transaction.on_commit(lambda: dispatch.fill(tenant_id))


def record_failure(activation: Activation, message: str, *, counts: bool = True) -> None:
    """The sandbox (or the engine) failed to run the activation: try again shortly, until
    SANDBOX_FAILURE_LIMIT failures in a row, then error the instance. A failure that does
    not count (a machine too busy to give a slot) is only tried again."""
    from execution.engine import release

    message = escaped(message)[:2000]
    with held(activation) as instance:
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
        release(instance.pk, activation.token, retry_in=SANDBOX_RETRY)
        instance.lease_owner = ""


def record_error(activation: Activation, error: dict) -> None:
    """Error the instance without running it (what it holds forbids another activation)."""
    with held(activation) as instance:
        if instance is not None:
            error_instance(instance, error)


def history_error(limit: int) -> dict:
    return {
        "type": "HistoryTooLarge",
        "message": f"the instance's history (its steps' recorded results, errors and logs) "
        f"is over its limit of {limit} bytes",
    }


def history_size(step: Step | None) -> int:
    """What a step row adds to its instance's history: the JSON size of its result and
    error, and the length of its logs."""
    if step is None:
        return 0
    size = 0 if step.output is None else json_size(step.output)
    size += 0 if step.error is None else json_size(step.error)
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


def plain_completion_growth(activation: Activation, outcome: dict) -> int | None:
    """The common case, which record_completed_step records with the fewest statements:
    the step the activation was expected to run completed, within the limits. Returns
    what it adds to the instance's history, or None if it is not that case."""
    if outcome["kind"] != "step" or outcome["status"] != "complete":
        return None
    quota = activation.quota
    index = outcome["index"]
    if index != activation.next_index() or index >= quota.steps_per_instance:
        return None
    row = activation.row_for(index)
    if row is not None and row.status in Step.RESOLVED_STATUSES:
        return None
    size = json_size(outcome["output"])
    if size > quota.step_result_bytes:
        return None
    grown = size + len(outcome["logs"][: quota.step_output_bytes]) - history_size(row)
    if activation.history_bytes + grown > quota.history_bytes:
        return None  # record_any records it and errors the instance
    return grown


def is_plain_end(activation: Activation, outcome: dict) -> bool:
    """run() returned, within the limits; on PostgreSQL, outside a caller's transaction."""
    return (
        outcome["kind"] == "complete"
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and json_size(outcome.get("output")) <= activation.quota.step_result_bytes
    )


def record_end_in_one_statement(activation: Activation, output: Any) -> None:
    """complete_instance with the lease checked, for the common case: one statement that
    completes the instance, gives its lease back and stores its last progress event."""
    from execution.engine import wake_waiting_parents

    now = timezone.now()
    status = Instance.Status.COMPLETE
    event = ProgressEvent(
        instance_id=activation.instance_pk, type="instance.status", data={"status": status}
    )
    event.created_at = now
    output_param = Instance._meta.get_field("output").get_db_prep_save(output, connection)
    with rows.cursor() as cursor:
        cursor.execute(
            end_statement(),
            [
                status,
                output_param,
                now,
                now,
                activation.instance_pk,
                activation.token,
                activation.generation,
                Instance.Status.RUNNING,
                event.type,
                json.dumps(event.data),
                now,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        log.info("dropping a stale outcome for instance %s", activation.instance_pk)
        return
    event.seq = row[0]
    send(
        activation.instance_pk,
        activation.tenant_id,
        [event_message(event, activation.instance_key)],
    )
    wake_waiting_parents(Instance(pk=activation.instance_pk, tenant_id=activation.tenant_id))
    # The place this activation held is free: another due instance may take it.
    dispatch.fill(activation.tenant_id)


@functools.cache
def end_statement() -> str:
    """record_end_in_one_statement's SQL: the instance completed and its lease given back
    if the lease held, and its last progress event."""
    quote = connection.ops.quote_name
    return (
        f"WITH held AS (UPDATE {quote(Instance._meta.db_table)} SET status = %s, "
        "output = %s, error = NULL, updated_at = %s, finished_at = %s, next_run_at = NULL, "
        "lease_owner = '', lease_expires_at = NULL, dispatched_at = NULL, "
        "last_seq = last_seq + 1 "
        "WHERE id = %s AND lease_owner = %s AND generation = %s AND status = %s "
        "RETURNING id, last_seq), "
        f"event AS (INSERT INTO {quote(ProgressEvent._meta.db_table)} "
        "(instance_id, seq, type, data, created_at) "
        "SELECT id, last_seq, %s, %s::jsonb, %s FROM held) "
        "SELECT last_seq FROM held"
    )


def record_completed_step(activation: Activation, outcome: dict, grown: int, *, keep: bool):
    """record_do for a completed step, with the fewest statements.

    The lease, checked and renewed (or given back) by the same UPDATE that reserves
    the events' sequence numbers and holds the row until the commit, guarantees that
    no other writer touched the instance's steps: the activation's own knowledge of
    the step's row (new, marked running, or an earlier attempt) is the truth.
    """
    step, events = completed_step(activation, outcome)
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        recorded = store_completion_in_one_statement(activation, step, events, grown, keep=keep)
    else:
        with transaction.atomic():
            recorded = store_completion(activation, step, events, grown, keep=keep)
    if not recorded:
        log.info("dropping a stale outcome for instance %s", activation.instance_pk)
        return None
    if not keep:
        # The place this activation held is free: another due instance may take it.
        transaction.on_commit(lambda: dispatch.fill(activation.tenant_id))
    return activation.then(step, grown) if keep else None


def completed_step(activation: Activation, outcome: dict) -> tuple[Step, list[tuple]]:
    """The step's row as it is to be stored, and its (type, data) progress events."""
    quota = activation.quota
    now = timezone.now()
    step = activation.row_for(outcome["index"])
    if step is None:
        step = Step(instance_id=activation.instance_pk, index=outcome["index"], kind=Step.Kind.DO)
    announced = step.status == Step.Status.RUNNING
    if not announced:
        step.started_at = now - duration(outcome)
    step.name = outcome["name"]
    step.attempts += 1
    step.logs = outcome["logs"][: quota.step_output_bytes]
    step.config = step_config(outcome)
    step.status, step.output, step.error = Step.Status.COMPLETE, outcome["output"], None
    step.finished_at, step.wake_at = now, None
    summary = step_summary(step)
    events = [("step.started", {"step": summary})] if step.pk is None and not announced else []
    events += [("step.log", {"step": summary, "line": line}) for line in log_lines(step)]
    events.append(("step.completed", {"step": summary}))
    return step, events


def store_completion(
    activation: Activation, step: Step, events: list[tuple], grown: int, *, keep: bool
) -> bool:
    """Store a completed step and its events in the caller's transaction; False if stale."""
    last_seq = hold_for_record(activation, len(events), grown, keep=keep, now=step.finished_at)
    if last_seq is None:
        return False
    step.save(force_insert=step.pk is None)
    store_events(
        activation.instance_pk, activation.instance_key, activation.tenant_id, last_seq, events
    )
    return True


def store_completion_in_one_statement(
    activation: Activation, step: Step, events: list[tuple], grown: int, *, keep: bool
) -> bool:
    """store_completion as one PostgreSQL statement in its own transaction: the lease
    UPDATE, the step's INSERT (or UPDATE) and the events' INSERT are data-modifying
    CTEs that write only if the lease held. One round trip and one commit per step,
    bound on the server (lib.rows.cursor)."""
    is_new = step.pk is None
    at = step.finished_at
    with rows.cursor() as cursor:
        cursor.execute(
            completion_statement(is_new=is_new, keep=keep),
            [
                *hold_params(activation, len(events), grown, keep=keep, now=at),
                *rows.values_of(step),
                *([] if is_new else [step.pk]),
                len(events),
                at,
                [type_ for type_, _ in events],
                [json.dumps(data) for _, data in events],
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    last_seq, step.pk = row
    stored = numbered(activation.instance_pk, last_seq, events, at)
    send(
        activation.instance_pk,
        activation.tenant_id,
        [event_message(event, activation.instance_key) for event in stored],
    )
    return True


@functools.cache
def completion_statement(*, is_new: bool, keep: bool) -> str:
    quote = connection.ops.quote_name
    step_table = quote(Step._meta.db_table)
    if is_new:
        step_sql = (
            f"INSERT INTO {step_table} ({rows.column_list(Step)}) "
            f"SELECT {rows.typed_placeholders(Step)} FROM held RETURNING id"
        )
    else:
        assignments = ", ".join(f"{quote(f.column)} = %s" for f in rows.insertable(Step))
        step_sql = (
            f"UPDATE {step_table} SET {assignments} "
            f"FROM held WHERE {step_table}.id = %s RETURNING {step_table}.id"
        )
    events_sql = (
        f"INSERT INTO {quote(ProgressEvent._meta.db_table)} "
        "(instance_id, seq, type, data, created_at) "
        "SELECT held.id, held.last_seq - %s + e.n, e.type, e.data::jsonb, %s "
        "FROM held, unnest(%s::text[], %s::text[]) WITH ORDINALITY AS e(type, data, n)"
    )
    return (
        f"WITH held AS ({hold_sql(keep=keep)}), step AS ({step_sql}), "
        f"events AS ({events_sql}) SELECT held.last_seq, step.id FROM held, step"
    )


def hold_for_record(
    activation: Activation, events: int, grown: int, *, keep: bool, now
) -> int | None:
    """Check the lease, reserve `events` sequence numbers, count `grown` bytes more of
    history, end a run of sandbox failures and make the instance due now: kept by this
    worker (lease renewed, counted as sent) or given back to the queue. Returns the
    last reserved number, or None if the lease is no longer this activation's."""
    params = hold_params(activation, events, grown, keep=keep, now=now)
    with connection.cursor() as cursor:
        cursor.execute(hold_sql(keep=keep), params)
        row = cursor.fetchone()
    return row[1] if row else None


def hold_sql(*, keep: bool) -> str:
    """hold_for_record's UPDATE; it returns the instance's id and its last reserved seq."""
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c)} = %s" for c in held_columns(keep))
    # A kept instance's next activation runs under this lease without a claim: count it.
    counted = ", activations = activations + 1" if keep else ""
    return (
        f"UPDATE {quote(Instance._meta.db_table)} "
        f"SET last_seq = last_seq + %s, history_bytes = history_bytes + %s, "
        f"sandbox_failures = 0, {assignments}{counted} "
        "WHERE id = %s AND lease_owner = %s AND generation = %s AND status = %s "
        "RETURNING id, last_seq"
    )


def held_columns(keep: bool) -> tuple[str, ...]:
    """What the outcome's UPDATE sets. A kept instance only has its lease renewed: while
    the lease is held nothing else reads when it is due, and leaving the indexed
    columns alone lets PostgreSQL update the row in place (HOT), without touching the
    instance's five indexes, on every step (history_bytes and sandbox_failures are not
    indexed either). Given back, it is due now and sent nowhere."""
    if keep:
        return ("lease_expires_at",)
    return ("next_run_at", "lease_owner", "lease_expires_at", "dispatched_at")


def hold_params(activation: Activation, events: int, grown: int, *, keep: bool, now) -> list:
    from execution.engine import lease_duration

    held = [now + lease_duration()] if keep else [now, "", None, None]
    return [
        events,
        grown,
        *held,
        activation.instance_pk,
        activation.token,
        activation.generation,
        str(Instance.Status.RUNNING),
    ]


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
            is_new = step.pk is None
            step.save()
            if is_new and not announced:
                record_event(instance, "step.started", step=step_summary(step))
            publish_logs(instance, step)
            record_event(instance, "step.completed", step=step_summary(step))
            dispatch.run_now(instance)
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
    fail_attempt(instance, step, outcome["error"], outcome["retryable"])
    return step


def fail_attempt(instance: Instance, step: Step, error: dict, retryable: bool) -> None:
    """One attempt of a do step failed: retry after its backoff, or give up."""
    now = timezone.now()
    retries = stored_retries(step.config)
    step.error = error
    step.finished_at = now
    is_new = step.pk is None
    if retryable and step.attempts <= retries["limit"]:
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
    # Attempts are at most MAX_RETRY_LIMIT + 1; the exponent is capped all the same.
    if backoff == "linear":
        seconds = delay * attempt
    elif backoff == "exponential":
        seconds = delay * 2.0 ** min(attempt - 1, 64)
    else:
        seconds = delay
    return timedelta(seconds=min(seconds, 7 * 24 * 3600))


def record_sleep(instance: Instance, existing: Step | None, outcome: dict) -> Step:
    from execution.engine import set_status

    step = new_step(instance, existing, outcome, Step.Kind.SLEEP)
    until = outcome["until"]
    step.status, step.wake_at, step.attempts = Step.Status.SLEEPING, until, 1
    step.save()
    record_event(instance, "step.sleeping", step=step_summary(step), until=until.isoformat())
    set_status(instance, Instance.Status.SLEEPING)
    if until <= timezone.now():
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, until)
    return step


def record_wait(instance: Instance, existing: Step | None, outcome: dict) -> Step:
    from execution.engine import set_status

    step = new_step(instance, existing, outcome, Step.Kind.WAIT_FOR_EVENT)
    step.event_type = outcome["event_type"]
    step.status, step.attempts = Step.Status.WAITING, 1
    step.wake_at = timezone.now() + timedelta(seconds=outcome["timeout_seconds"])
    step.config = {"timeout_seconds": outcome["timeout_seconds"]}
    step.save()
    record_event(instance, "step.waiting", step=step_summary(step), event_type=step.event_type)
    set_status(instance, Instance.Status.WAITING)
    # An event sent before the wait counts.
    if instance.events.filter(type=step.event_type, consumed_by__isnull=True).exists():
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, step.wake_at)
    return step


def record_start_workflow(instance: Instance, existing: Step | None, outcome: dict) -> Step:
    from execution.workflows import StartError, start_instance

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
    record_event(instance, "step.started", step=step_summary(step))
    kind = "step.completed" if step.status == Step.Status.COMPLETE else "step.failed"
    record_event(instance, kind, step=step_summary(step))
    dispatch.run_now(instance)
    return step


def record_wait_workflow(instance: Instance, existing: Step | None, outcome: dict) -> Step:
    from execution.engine import set_status

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
    set_status(instance, Instance.Status.WAITING)
    if target is None or target.is_terminal:
        dispatch.run_now(instance)
    else:
        dispatch.run_at(instance, step.wake_at)
    return step


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
    step.attempts += 1
    step.started_at = timezone.now() - timedelta(seconds=result.wall_seconds)
    limit = instance.tenant.quota.step_output_bytes
    step.logs = escaped((result.stdout + result.stderr)[-limit:])[-limit:]
    retryable = result.status != Status.OUTPUT_TOO_LARGE
    fail_attempt(instance, step, error, retryable)
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

    set_status(instance, Instance.Status.ERRORED, error=clean_error(error))


def log_lines(step: Step) -> list[str]:
    """The step's output as step.log events carry it: the first 200 non-blank lines."""
    return [line[:2000] for line in step.logs.splitlines() if line.strip()][:200]


def publish_logs(instance: Instance, step: Step) -> None:
    for line in log_lines(step):
        record_event(instance, "step.log", step=step_summary(step), line=line)
