"""The durable engine: one activation of an instance runs at most one new step.

advance() claims the instance with a lease, settles the step it was suspended on
(a sleep that is over, an event that arrived, a child that ended), runs the
sandbox once with the recorded history, and records what came back in one
transaction that also decides what happens next.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from execution import dispatch, outcomes
from execution.models import Instance, Step
from execution.progress import record_event, step_summary
from execution.sandbox import SandboxRequest, SandboxResult, get_sandbox
from tenants.models import Tenant

log = logging.getLogger(__name__)


@dataclass
class Activation:
    instance_pk: int
    token: str
    generation: int
    tenant_slug: str
    code: str
    code_sha256: str
    input: dict
    pending: Step | None  # the unresolved do step being retried, if any


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_LEASE_SECONDS)


def advance(instance_pk: int) -> None:
    """Run activations of the instance while its next step is ready, within a budget.

    Going on in the same task saves a trip through the broker and a claim per step;
    the budget hands the worker back to the queue so other instances get their turn.
    """
    deadline = time.monotonic() + settings.STEPWELL_INLINE_SECONDS
    ready = activate_once(instance_pk, keep=settings.STEPWELL_INLINE_SECONDS > 0)
    while ready:
        if time.monotonic() >= deadline:
            dispatch.send_kept(instance_pk)
            return
        ready = activate_once(instance_pk, keep=True, was_kept=True)


def activate_once(instance_pk: int, *, keep: bool = False, was_kept: bool = False) -> bool:
    """One activation. With `keep`, an instance that is ready again right away is not
    sent to the queue: returns True, and the caller runs it next."""
    token = uuid.uuid4().hex
    if not claim(instance_pk, token):
        if was_kept:
            dispatch.send_kept(instance_pk)
        return False
    try:
        activation = prepare_activation(instance_pk, token)
        if activation is None:
            return False
        with Heartbeat(instance_pk, token):
            result = run_sandbox(activation)
        with dispatch.kept(instance_pk if keep else None) as kept:
            outcomes.record(activation, result)
        return kept.ready
    except Exception:
        log.exception("activation of instance %s failed in the engine", instance_pk)
        release(instance_pk, token, retry_in=timedelta(seconds=5))
        raise


def claim(instance_pk: int, token: str) -> bool:
    """Take the lease of an active instance nobody else holds. Never check-then-act.

    The tenant's row is locked while its activations are counted, so two workers
    can never both take the last free place under the tenant's concurrency cap.
    """
    now = timezone.now()
    tenant_id = Instance.objects.filter(pk=instance_pk).values_list("tenant_id", flat=True).first()
    if tenant_id is None:
        return False
    with transaction.atomic():
        relaxed_commit()
        tenant = (
            Tenant.objects.select_related("quota_row")
            .select_for_update(of=("self",))
            .get(pk=tenant_id)
        )
        if tenant.suspended_at is not None:
            return False
        held = (
            Instance.objects.filter(tenant_id=tenant_id, lease_expires_at__gte=now)
            .exclude(lease_owner="")
            .exclude(pk=instance_pk)
            .count()
        )
        if held >= tenant.quota.concurrent_activations:
            # Over the cap (a message sent before others took the places): due again.
            Instance.objects.filter(pk=instance_pk).update(dispatched_at=None)
            return False
        free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
        claimed = (
            Instance.objects.filter(pk=instance_pk, status__in=Instance.ACTIVE_STATUSES)
            .filter(free)
            .update(
                lease_owner=token,
                lease_expires_at=now + lease_duration(),
                dispatched_at=None,
                activations=F("activations") + 1,
            )
        )
    return claimed == 1


def release(instance_pk: int, token: str, *, retry_in: timedelta | None = None) -> None:
    # dispatched_at is left alone: the claim cleared it, and an instance this worker
    # keeps running (dispatch.kept) has it set so that nobody else is sent it.
    fields = {"lease_owner": "", "lease_expires_at": None}
    if retry_in is not None:
        fields.update(next_run_at=timezone.now() + retry_in, dispatched_at=None)
    Instance.objects.filter(pk=instance_pk, lease_owner=token).update(**fields)


def holds_lease(instance: Instance, token: str) -> bool:
    return instance.lease_owner == token


@transaction.atomic
def prepare_activation(instance_pk: int, token: str) -> Activation | None:
    instance = (
        Instance.objects.select_for_update(of=("self",))
        .select_related("version", "tenant__quota_row")
        .get(pk=instance_pk)
    )
    if not holds_lease(instance, token) or instance.status not in Instance.ACTIVE_STATUSES:
        return None
    steps = list(instance.steps.order_by("index"))
    last = steps[-1] if steps else None
    pending = None
    if last is not None and last.status not in Step.RESOLVED_STATUSES:
        not_before = settle(instance, last)
        if not_before is not None:
            release(instance.pk, token)
            dispatch.run_at(instance, not_before)
            return None
        if last.status not in Step.RESOLVED_STATUSES:
            pending = last
    if instance.status != Instance.Status.RUNNING:
        set_status(instance, Instance.Status.RUNNING)
    quota = instance.tenant.quota
    return Activation(
        instance_pk=instance.pk,
        token=token,
        generation=instance.generation,
        tenant_slug=instance.tenant.slug,
        code=instance.version.code,
        code_sha256=instance.version.sha256,
        input={
            "instance_id": instance.key,
            "payload": instance.payload,
            "timestamp": instance.created_at.isoformat(),
            "now": timezone.now().isoformat(),
            "history": [s.as_history() for s in steps],
            "limits": {
                "result_bytes": quota.step_result_bytes,
                "log_bytes": quota.step_output_bytes,
                "step_timeout_seconds": float(quota.step_timeout_seconds),
            },
        },
        pending=pending,
    )


def settle(instance: Instance, step: Step) -> datetime | None:
    """Resolve the step the instance is suspended on, if its time has come.

    Returns when to look again if nothing can be resolved yet, else None.
    """
    now = timezone.now()
    if step.status == Step.Status.SLEEPING:
        if step.wake_at > now:
            return step.wake_at
        finish_step(instance, step, Step.Status.COMPLETE, output=None)
        record_event(instance, "instance.resumed", step=step_summary(step))
        return None
    if step.status == Step.Status.WAITING and step.kind == Step.Kind.WAIT_FOR_EVENT:
        event = (
            instance.events.filter(type=step.event_type, consumed_by__isnull=True)
            .order_by("id")
            .first()
        )
        if event is not None:
            event.consumed_by = step
            event.save(update_fields=["consumed_by"])
            finish_step(instance, step, Step.Status.COMPLETE, output=event.payload)
            record_event(instance, "instance.resumed", step=step_summary(step))
            return None
        if step.wake_at > now:
            return step.wake_at
        error = {"type": "WaitTimeout", "message": f"no {step.event_type!r} event arrived in time"}
        finish_step(instance, step, Step.Status.TIMED_OUT, error=error)
        return None
    if step.status == Step.Status.WAITING and step.kind == Step.Kind.WAIT_FOR_WORKFLOW:
        child = step.target
        if child is not None and child.is_terminal:
            if child.status == Instance.Status.COMPLETE:
                finish_step(instance, step, Step.Status.COMPLETE, output=child.output)
            else:
                error = {
                    "type": (child.error or {}).get("type", "WorkflowTerminated"),
                    "message": (child.error or {}).get(
                        "message", f"instance {child.key} was {child.status}"
                    ),
                }
                finish_step(instance, step, Step.Status.ERRORED, error=error)
            record_event(instance, "instance.resumed", step=step_summary(step))
            return None
        if child is None:
            error = {"type": "WorkflowNotFound", "message": "the awaited instance is gone"}
            finish_step(instance, step, Step.Status.ERRORED, error=error)
            return None
        if step.wake_at > now:
            return step.wake_at
        error = {"type": "WaitTimeout", "message": f"instance {child.key} did not end in time"}
        finish_step(instance, step, Step.Status.TIMED_OUT, error=error)
        return None
    if step.status == Step.Status.FAILED and step.wake_at and step.wake_at > now:
        return step.wake_at
    return None


def finish_step(instance: Instance, step: Step, status: str, *, output=None, error=None) -> None:
    step.status = status
    step.output = output
    step.error = error
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "output", "error", "finished_at"])


def set_status(instance: Instance, status: str, **fields) -> None:
    now = timezone.now()
    instance.status = status
    instance.updated_at = now
    update = {"status": status, "updated_at": now, **fields}
    if status in Instance.TERMINAL_STATUSES:
        update.update(finished_at=now, next_run_at=None, lease_owner="", lease_expires_at=None)
    for name, value in update.items():
        setattr(instance, name, value)
    Instance.objects.filter(pk=instance.pk).update(**update)
    record_event(instance, "instance.status", status=status)
    if status in Instance.TERMINAL_STATUSES:
        wake_waiting_parents(instance)


def wake_waiting_parents(child: Instance) -> None:
    for parent in Instance.objects.filter(
        steps__target=child, steps__status=Step.Status.WAITING
    ).distinct():
        if parent.status in Instance.ACTIVE_STATUSES:
            dispatch.run_now(parent)


def run_sandbox(activation: Activation) -> SandboxResult:
    instance = Instance.objects.select_related("tenant__quota_row").get(pk=activation.instance_pk)
    quota = instance.tenant.quota
    limits = quota.sandbox_limits()
    request = SandboxRequest(
        tenant=activation.tenant_slug,
        code=activation.code,
        code_sha256=activation.code_sha256,
        input=activation.input,
        limits=limits,
        mode="workflow",
        on_progress=lambda note: note_started(activation, note),
    )
    # Benchmarks only; get_sandbox refuses "unsandboxed" without STEPWELL_BENCH_UNSANDBOXED=1.
    mode = os.environ.get("STEPWELL_BENCH_SANDBOX_MODE") or quota.sandbox_mode
    return get_sandbox(mode).run(request)


def note_started(activation: Activation, note: dict) -> None:
    """The runtime is about to run a do step: show it as running, while it runs.

    The row also tells a later activation which step a crashed worker was in.
    """
    if note.get("kind") != "intent":
        return
    try:
        intent = outcomes.check_outcome({**note, "kind": "step"})
    except outcomes.InvalidOutcome:
        return
    with transaction.atomic():
        relaxed_commit()
        instance = Instance.objects.select_for_update().get(pk=activation.instance_pk)
        if instance.lease_owner != activation.token:
            return
        step = Step.objects.filter(instance=instance, index=intent["index"]).first()
        if step is not None and step.status in Step.RESOLVED_STATUSES:
            return
        if step is None:
            step = Step(instance=instance, index=intent["index"], kind=Step.Kind.DO)
        step.name = intent["name"]
        step.status = Step.Status.RUNNING
        step.started_at = timezone.now()
        step.finished_at = None
        step.config = {
            "retries": intent.get("retries") or outcomes.DEFAULT_RETRIES,
            "timeout_seconds": intent.get("timeout_seconds"),
        }
        step.save()
        record_event(instance, "step.started", step=step_summary(step))


def relaxed_commit() -> None:
    """Let this transaction commit without waiting for the disk.

    Only for bookkeeping that may be lost in an operating-system crash without harm:
    a lease (it lapses and is claimed again) or a step shown as running (it runs
    again). PostgreSQL still writes it in order; a database restart loses nothing.
    Outcomes are always committed in full.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


class Heartbeat:
    """Renews the lease while a step runs, so a dead worker's lease lapses in seconds."""

    def __init__(self, instance_pk: int, token: str):
        self.instance_pk = instance_pk
        self.token = token
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        interval = settings.STEPWELL_LEASE_SECONDS / 3
        try:
            while not self.stop.wait(interval):
                try:
                    Instance.objects.filter(pk=self.instance_pk, lease_owner=self.token).update(
                        lease_expires_at=timezone.now() + lease_duration()
                    )
                except Exception:
                    log.warning("lease heartbeat failed", exc_info=True)
                    close_old_connections()
        finally:
            connection.close()
