"""The lifecycle's part of recording an outcome on PostgreSQL's fast paths: the UPDATE
that checks the lease and gives it back or renews it (kept), and the statement that ends
an instance (finish_in_one_statement, beside its portable twin finish_portably)."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from execution import twins
from execution.activation import Activation
from execution.lifecycle import due, notices, states
from execution.lifecycle.leases import lease_duration
from execution.models import Instance, ProgressEvent
from execution.progress import event_message, send
from lib import metrics, rows
from webhooks import deliveries

log = logging.getLogger(__name__)


def record_under_lease(
    activation: Activation, events: int, grown: int, *, keep: bool, now
) -> int | None:
    """Check the lease, reserve `events` sequence numbers, count `grown` bytes more of
    history, end a run of sandbox failures and make the instance due now: kept by this
    worker (lease renewed, counted as sent) or given back to the queue. Returns the
    last reserved number, or None if the lease is no longer this activation's."""
    params = lease_update_params(activation, events, grown, keep=keep, now=now)
    with connection.cursor() as cursor:
        cursor.execute(lease_update_sql(keep=keep), params)
        row = cursor.fetchone()
    return row[1] if row else None


def lease_update_sql(*, keep: bool) -> str:
    """record_under_lease's UPDATE; it returns the instance's id and its last reserved seq."""
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c)} = %s" for c in lease_columns(keep))
    # A kept instance's next activation runs under this lease without a claim: count it.
    counted = ", activations = activations + 1" if keep else ""
    return (
        f"UPDATE {quote(Instance._meta.db_table)} "
        f"SET last_seq = last_seq + %s, history_bytes = history_bytes + %s, "
        f"sandbox_failures = 0, {assignments}{counted} "
        "WHERE id = %s AND lease_owner = %s AND generation = %s AND status = %s "
        "RETURNING id, last_seq"
    )


def lease_columns(keep: bool) -> tuple[str, ...]:
    """What the outcome's UPDATE sets. A kept instance only has its lease renewed: while
    the lease is held nothing else reads when it is due, and leaving the indexed
    columns alone lets PostgreSQL update the row in place (HOT), without touching any of
    the instance's indexes, on every step: no index may name a column this UPDATE sets
    (tests/execution/test_hot_updates.py). Given back, it is due now and sent nowhere."""
    if keep:
        return ("lease_expires_at",)
    return ("next_run_at", "lease_owner", "lease_expires_at", "dispatched_at")


def lease_update_params(
    activation: Activation, events: int, grown: int, *, keep: bool, now
) -> list:
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


def finish_leased(activation: Activation, output: Any) -> bool:
    """Complete the instance with `output` if the activation's lease still holds it, and
    give the lease back; False if the lease is gone (the outcome is stale). The one
    statement writes no webhook deliveries: with a webhook listening, it changes nothing
    and the portable twin does it all."""
    if twins.hand_written():
        finished = finish_in_one_statement(activation, output)
        if finished is not None:
            if finished:
                metrics.INSTANCES_FINISHED.labels(Instance.Status.COMPLETE).inc()
            return finished
    return finish_portably(activation, output)  # counted by states.set_status


def finish_portably(activation: Activation, output: Any) -> bool:
    """finish_in_one_statement's portable twin: the same check and the same writes."""
    with transaction.atomic():
        instance = (
            Instance.objects.select_for_update(no_key=True)
            .filter(
                pk=activation.instance_pk,
                lease_owner=activation.token,
                generation=activation.generation,
                status=Instance.Status.RUNNING,
            )
            .first()
        )
        if instance is None:
            return False
        states.finish(
            instance, Instance.Status.COMPLETE, output=output, error=None, dispatched_at=None
        )
        tenant_id = instance.tenant_id
        # The place this activation held is free: another due instance may take it.
        transaction.on_commit(lambda: due.fill(tenant_id))
    return True


def finish_in_one_statement(activation: Activation, output: Any) -> bool | None:
    """Complete the instance if the lease holds and no webhook of the tenant listens: one
    statement that completes it, gives its lease back and stores its last progress event.
    False if the lease is gone; None, with nothing changed, if a webhook listens (it asks
    what notices.listened would, so that an instance's end costs one round trip)."""
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
                activation.tenant_id,
                notices.event_of(status),
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
                *states.waiting_parents_params(activation.instance_pk),
            ],
        )
        last_seq, listened, parents = cursor.fetchone()
    if listened:
        return None
    if last_seq is None:
        return False
    event.seq = last_seq
    message = event_message(event, activation.instance_key)
    instance_pk, tenant_id = activation.instance_pk, activation.tenant_id
    transaction.on_commit(lambda: send(instance_pk, tenant_id, [message]))
    states.wake_parents(parents)
    # The place this activation held is free: another due instance may take it.
    transaction.on_commit(lambda: due.fill(tenant_id))
    return True


@functools.cache
def end_statement() -> str:
    """finish_in_one_statement's SQL: the instance completed and its lease given back if
    the lease held and no webhook listens, and its last progress event. Returns the
    event's seq (NULL if nothing changed), whether a webhook listens, and the instances
    waiting for this one (states.waiting_parents_statement: a round trip less per end)."""
    quote = connection.ops.quote_name
    return (
        f"WITH listened AS (SELECT {deliveries.listening_condition()} AS yes), "
        f"held AS (UPDATE {quote(Instance._meta.db_table)} SET status = %s, "
        "output = %s, error = NULL, updated_at = %s, finished_at = %s, next_run_at = NULL, "
        "lease_owner = '', lease_expires_at = NULL, dispatched_at = NULL, "
        "last_seq = last_seq + 1 "
        "WHERE id = %s AND lease_owner = %s AND generation = %s AND status = %s "
        "AND NOT (SELECT yes FROM listened) "
        "RETURNING id, last_seq), "
        f"event AS (INSERT INTO {quote(ProgressEvent._meta.db_table)} "
        "(instance_id, seq, type, data, created_at) "
        "SELECT id, last_seq, %s, %s::jsonb, %s FROM held) "
        "SELECT (SELECT last_seq FROM held), (SELECT yes FROM listened), "
        "(SELECT coalesce(json_agg(json_build_array(w.id, w.tenant_id)), '[]'::json) "
        f"FROM ({states.waiting_parents_statement()}) w)"
    )
