"""Deliveries: the outbox rows a status change writes, and the attempts that send them.

The database is the record and the schedule: a delivery is due when `next_attempt_at`
passes; the clock's sweep claims due ones (SKIP LOCKED, so two clocks share the work)
and sends each to a task on the webhooks queue. A claim moves `next_attempt_at` an
attempt's lease ahead, so a task or worker lost on the way only delays the delivery
until the sweep finds it due again: at least once, never lost.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from lib import metrics, rows
from webhooks import client
from webhooks.addresses import Refused, check
from webhooks.models import Delivery, Webhook
from webhooks.signing import signed_headers

log = logging.getLogger(__name__)

# webhooks.tasks.deliver; webhooks.apps registers it when Django starts.
DELIVER = "stepwell.deliver_webhook"
# First retry 5 s after a failure, each wait three times the last, at most 6 hours:
# 13 attempts over 28.5 hours (the contract: first retry within 10 s, for >= 24 h).
FIRST_RETRY_SECONDS = 5
RETRY_FACTOR = 3
LONGEST_RETRY_SECONDS = 6 * 3600
# How long a claimed attempt may take before the sweep sends it again: the attempt's
# deadline and room for the queue and the recording.
ATTEMPT_LEASE = timedelta(seconds=60)
SWEEP_BATCH = 100


def retry_delay(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt a delivery is tried again."""
    seconds = FIRST_RETRY_SECONDS * RETRY_FACTOR ** min(attempts - 1, 20)
    return timedelta(seconds=min(seconds, LONGEST_RETRY_SECONDS))


def listening(tenant_id: int, event: str) -> list[int]:
    """The tenant's webhooks that want `event`: one prepared query on the tenant's index
    (every status change asks), which finds nothing for a tenant without webhooks."""
    events_field = Webhook._meta.get_field("events")
    with rows.cursor() as cursor:
        cursor.execute(listening_statement(), [tenant_id])
        found = cursor.fetchall()
    return [pk for pk, events in found if event in rows.from_db(events_field, events)]


@functools.cache
def listening_statement() -> str:
    qn = connection.ops.quote_name
    return f"SELECT id, events FROM {qn(Webhook._meta.db_table)} WHERE tenant_id = %s"


@functools.cache
def listening_condition(tenant: str = "%s", event: str = "%s") -> str:
    """Whether listening(tenant, event) finds a webhook, as a PostgreSQL condition on two
    SQL expressions (by default two parameters: tenant id, event), for a statement that
    changes a status only when no webhook listens, or reads the tenant anyway (the
    claim), and so saves the query (execution.lifecycle). jsonb_exists is Python's `in`
    on the events list; tests/webhooks/test_outbox.py checks they agree."""
    qn = connection.ops.quote_name
    return (
        f"EXISTS (SELECT 1 FROM {qn(Webhook._meta.db_table)} "
        f"WHERE tenant_id = {tenant} AND jsonb_exists(events, {event}))"
    )


def record(webhook_ids: list[int], event: str, instance_id: int, key: str, body: str) -> None:
    """One delivery of `body` per webhook, due now, in the caller's transaction (the
    status change's): the change and its deliveries commit together or not at all."""
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(
            webhook_id=pk,
            event=event,
            instance_id=instance_id,
            instance_key=key,
            body=body,
            next_attempt_at=now,
            created_at=now,
        )
        for pk in webhook_ids
    )


def sweep(batch: int = SWEEP_BATCH) -> int:
    """Claim up to `batch` due deliveries and send each to a task; how many."""
    with transaction.atomic():
        now = timezone.now()
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:batch]
        )
        if not due:
            return 0
        lease = now + ATTEMPT_LEASE
        Delivery.objects.filter(pk__in=due).update(next_attempt_at=lease)
        transaction.on_commit(lambda: enqueue(due, lease))
    return len(due)


def enqueue(delivery_ids: list[int], lease: datetime) -> None:
    task = current_app.tasks[DELIVER]
    for pk in delivery_ids:
        try:
            task.apply_async(args=[pk, lease.isoformat()], queue=settings.STEPWELL_WEBHOOK_QUEUE)
        except Exception:
            # The broker is down: the sweep finds it due again once the lease passes.
            log.warning("could not enqueue webhook delivery %s", pk, exc_info=True)


def attempt(delivery_id: int, lease: datetime) -> None:
    """One attempt of the delivery the sweep claimed with `lease`; nothing if it is gone
    or another attempt took it (a resend, a message sent twice)."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, next_attempt_at=lease).update(
        next_attempt_at=now + ATTEMPT_LEASE, attempts=F("attempts") + 1, last_attempt_at=now
    )
    if not claimed:
        return
    delivery = Delivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None:  # its webhook was deleted meanwhile
        return
    status_code, error = send(delivery)
    settle(delivery, status_code, error)


def send(delivery: Delivery) -> tuple[int | None, str]:
    """POST the delivery to its webhook now: the answer's status (None if there was no
    answer) and what went wrong ("" for a 2xx)."""
    try:
        target = check(delivery.webhook.url)  # again: what a name resolves to can change
    except Refused as exc:
        return None, f"refused: {exc}"
    headers = signed_headers(
        delivery.webhook.secret, str(delivery.pk), delivery.body, timezone.now()
    )
    try:
        answer = client.post(
            target,
            delivery.body.encode(),
            headers,
            deadline=settings.STEPWELL_WEBHOOK_DEADLINE_SECONDS,
            max_read=settings.STEPWELL_WEBHOOK_MAX_READ_BYTES,
        )
    except client.AttemptFailed as exc:
        return None, str(exc)
    if 200 <= answer.status < 300:
        return answer.status, ""
    said = answer.body[:200].decode("utf-8", "replace")
    return answer.status, f"HTTP {answer.status}" + (f": {said}" if said else "")


def settle(delivery: Delivery, status_code: int | None, error: str) -> str:
    """Record the attempt's result: delivered, due again after the backoff, or given up.
    Written only if no later attempt was claimed meanwhile. Returns the result."""
    at = timezone.now()
    fields = {"status_code": status_code, "error": error[:2000]}
    if not error:
        result = "delivered"
        fields.update(delivered_at=at, next_attempt_at=None)
    elif delivery.attempts < delivery.max_attempts:
        result = "retrying"
        fields.update(next_attempt_at=at + retry_delay(delivery.attempts))
    else:
        result = "failed"
        gave_up = f"{error} (gave up after {delivery.attempts} attempts)"
        fields.update(next_attempt_at=None, error=gave_up[-2000:])
    Delivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(**fields)
    log.info("webhook attempt %s", result)
    metrics.webhook_delivered(result)
    return result


def forget_instances(instance_ids: list[int]) -> int:
    """Delete the deliveries of instances that retention deleted, in the caller's
    transaction: each holds its instance's JSON, which must not outlive it."""
    deleted, _ = Delivery.objects.filter(instance_id__in=instance_ids).delete()
    return deleted


@transaction.atomic
def resend(delivery: Delivery) -> None:
    """One more attempt, due now. A delivery that had ended (delivered or given up) gets
    exactly one; a pending one is only brought forward, its schedule unchanged."""
    fields = {"next_attempt_at": timezone.now()}
    if delivery.next_attempt_at is None:
        fields["max_attempts"] = delivery.attempts + 1
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
