"""The common outcomes recorded with the fewest statements: a do step that completed
(store_completion, and on PostgreSQL store_completion_in_one_statement) and the end of
run() (records.finish_leased: finish_in_one_statement on PostgreSQL, else its twin).

The lease, checked and renewed (or given back) by the same UPDATE that reserves the
events' sequence numbers (lifecycle.records), holds the row until the commit.
"""

from __future__ import annotations

import functools
import json
import logging

from django.db import connection, transaction
from django.utils import timezone

from execution import twins
from execution.activation import Activation, Next
from execution.kinds import history_size, log_lines, step_config
from execution.lifecycle import due, records
from execution.models import ProgressEvent, Step
from execution.outcome_checks import duration, json_size
from execution.progress import (
    numbered_messages,
    send,
    started,
    step_summary,
    store_events,
)
from lib import rows

log = logging.getLogger(__name__)


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
    size += len(outcome["logs"][: quota.step_output_bytes])
    if row is not None and (kept := row.attempts_kept()):  # only for a retried step
        size += json_size(kept)
    grown = size - history_size(row)
    if activation.history_bytes + grown > quota.history_bytes:
        return None  # record_any records it and errors the instance
    return grown


def is_plain_end(activation: Activation, outcome: dict) -> bool:
    """run() returned, within the limits (records.finish_leased records it)."""
    return (
        outcome["kind"] == "complete"
        and json_size(outcome.get("output")) <= activation.quota.step_result_bytes
    )


def record_completed_step(
    activation: Activation, outcome: dict, grown: int, *, keep: bool
) -> Activation | Next:
    """record_do for a completed step, with the fewest statements.

    The lease, checked and renewed (or given back) by the same UPDATE that reserves
    the events' sequence numbers and holds the row until the commit, guarantees that
    no other writer touched the instance's steps: the activation's own knowledge of
    the step's row (new, marked running, or an earlier attempt) is the truth.
    """
    step, events = completed_step(activation, outcome)
    if twins.hand_written():
        recorded = store_completion_in_one_statement(activation, step, events, grown, keep=keep)
    else:
        with transaction.atomic():
            recorded = store_completion(activation, step, events, grown, keep=keep)
    if not recorded:
        log.info("dropping a stale outcome for instance %s", activation.instance_pk)
        return Next.DONE
    if not keep:
        # The place this activation held is free: another due instance may take it.
        transaction.on_commit(lambda: due.fill(activation.tenant_id))
    return activation.then(step, grown) if keep else Next.DONE


def completed_step(activation: Activation, outcome: dict) -> tuple[Step, list[tuple]]:
    """The step's row as it is to be stored, and its (type, data) progress events."""
    quota = activation.quota
    now = timezone.now()
    step = activation.row_for(outcome["index"])
    if step is None:
        step = Step(instance_id=activation.instance_pk, index=outcome["index"], kind=Step.Kind.DO)
    announced = step.status == Step.Status.RUNNING
    step.begin_attempt()
    if not announced:
        step.started_at = now - duration(outcome)
    step.name = outcome["name"]
    step.attempts += 1
    step.logs = outcome["logs"][: quota.step_output_bytes]
    step.config = step_config(outcome)
    step.status, step.output, step.error = Step.Status.COMPLETE, outcome["output"], None
    step.finished_at, step.wake_at = now, None
    summary = step_summary(step)
    events = [] if announced else [("step.started", started(step))]
    events += [("step.log", {"step": summary, "line": line}) for line in log_lines(step)]
    events.append(("step.completed", {"step": summary}))
    return step, events


def store_completion(
    activation: Activation, step: Step, events: list[tuple], grown: int, *, keep: bool
) -> bool:
    """Store a completed step and its events in the caller's transaction; False if stale."""
    last_seq = records.record_under_lease(
        activation, len(events), grown, keep=keep, now=step.finished_at
    )
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
                *records.lease_update_params(activation, len(events), grown, keep=keep, now=at),
                *rows.values_of(step),
                *([] if is_new else [step.pk]),
                len(events),
                at,
                # One JSON document, [[type, data], ...]: two text arrays took psycopg's
                # Python array dumper an element at a time.
                json.dumps(events),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    last_seq, step.pk = row
    messages = numbered_messages(activation.instance_key, last_seq, events, at)
    instance_pk, tenant_id = activation.instance_pk, activation.tenant_id
    transaction.on_commit(lambda: send(instance_pk, tenant_id, messages))
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
        "SELECT held.id, held.last_seq - %s + e.n, e.event->>0, e.event->1, %s "
        "FROM held, jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(event, n)"
    )
    return (
        f"WITH held AS ({records.lease_update_sql(keep=keep)}), step AS ({step_sql}), "
        f"events AS ({events_sql}) SELECT held.last_seq, step.id FROM held, step"
    )
