"""The durable engine: one activation of an instance runs at most one new step.

advance() claims the instance with a lease, settles the step it was suspended on
(a sleep that is over, an event that arrived, a child that ended), runs the
sandbox once with the recorded history, and records what came back in one
transaction that also decides what happens next.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from execution import claims, dispatch, outcomes, workflows
from execution.models import CodeVersion, Instance, Step
from execution.progress import record_event, reserve_and_store, step_summary
from execution.sandbox import SandboxRequest, SandboxResult, get_sandbox
from execution.step_limits import limits_for
from execution.watch import Watch
from tenants.models import Quota, Tenant

log = logging.getLogger(__name__)


@dataclass
class Activation:
    instance_pk: int
    instance_key: str
    tenant_id: int
    token: str
    generation: int
    tenant_slug: str
    code: str
    code_sha256: str
    input: dict
    quota: Quota  # read when the instance was claimed
    pending: Step | None  # the unresolved do step being retried, if any
    history_bytes: int = 0  # Instance.history_bytes as the activation began
    # The do step's row as it is now written, if this activation showed it as running.
    marked: Step | None = None
    on_progress: Callable[[dict], None] | None = None

    def next_index(self) -> int:
        """The index of the step this activation is expected to run."""
        return self.pending.index if self.pending is not None else len(self.input["history"])

    def row_for(self, index: int) -> Step | None:
        """The stored row of step `index`, as far as this activation knows it."""
        for step in (self.marked, self.pending):
            if step is not None and step.index == index:
                return step
        return None

    def then(self, step: Step, grown: int = 0) -> Activation:
        """The next activation of the same instance under the same lease, `step` recorded
        (its history `grown` bytes larger)."""
        # The step replaces its own entry, if it had one (an attempt being retried).
        history = [*self.input["history"][: step.index], step.as_history()]
        return dataclasses.replace(
            self,
            input={**self.input, "history": history, "now": timezone.now().isoformat()},
            pending=None,
            marked=None,
            on_progress=None,
            history_bytes=self.history_bytes + grown,
        )


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.STEPWELL_LEASE_SECONDS)


def advance(instance_pk: int) -> None:
    """Run activations of the instance while its next step is ready, within a budget.

    Going on in the same task saves a trip through the broker and a claim per step;
    after a completed do step it also keeps the lease and the history it already
    holds, so the next activation starts without reading anything. The budget hands
    the worker back to the queue so other instances get their turn.
    """
    deadline = time.monotonic() + settings.STEPWELL_INLINE_SECONDS
    activation = begin(instance_pk)
    while activation is not None:
        keep = time.monotonic() < deadline
        activation = execute(activation, keep=keep)
        if activation is outcomes.AGAIN:
            # Ready again, but the lease was given back: claim it anew.
            activation = begin(instance_pk, was_kept=True)


def activate_once(instance_pk: int) -> bool:
    """One activation and nothing more (tests and tools); True if it ran."""
    activation = begin(instance_pk)
    if activation is None:
        return False
    execute(activation, keep=False)
    return True


def begin(instance_pk: int, *, was_kept: bool = False) -> Activation | None:
    """Claim the instance and read what its activation needs, in one transaction."""
    token = uuid.uuid4().hex
    with transaction.atomic():
        claimed = claim_and_load(instance_pk, token)
        activation = prepare_activation(*claimed, token) if claimed else None
    if claimed is None and was_kept:
        dispatch.send_kept(instance_pk)
    return activation


def claim_and_load(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """Take the lease (take_lease) and read the instance and its steps (load_claimed),
    in the caller's transaction; on PostgreSQL in three prepared statements (claims)."""
    if connection.vendor == "postgresql":
        now = timezone.now()
        return claims.claim(instance_pk, token, now, now + lease_duration())
    relaxed_commit()
    return load_claimed(instance_pk, token) if take_lease(instance_pk, token) else None


def execute(activation: Activation, *, keep: bool) -> Activation | object | None:
    """Run the activation and record its outcome; returns what outcomes.record does.

    An error here counts as a sandbox failure: a few in a row error the instance, so
    that nothing an instance holds can make the engine retry it forever.
    """
    limit = activation.quota.history_bytes
    try:
        if activation.history_bytes > limit:  # recorded before the quota, or lowered since
            outcomes.record_error(activation, outcomes.history_error(limit))
            return None
        with watch(activation) as watching:
            activation.on_progress = announced(watching)
            result = run_sandbox(activation)
        activation.marked = watching.marked
        return outcomes.record(activation, result, keep=keep)
    except Exception as exc:
        log.exception("activation of instance %s failed in the engine", activation.instance_pk)
        try:
            outcomes.record_failure(activation, f"{type(exc).__name__} in the engine")
        except Exception:
            log.exception("could not count the failure of instance %s", activation.instance_pk)
            release(activation.instance_pk, activation.token, retry_in=outcomes.SANDBOX_RETRY)
        raise


def claim(instance_pk: int, token: str) -> bool:
    """Take the lease of an active instance nobody else holds. Never check-then-act."""
    with transaction.atomic():
        return claim_and_load(instance_pk, token) is not None


def take_lease(instance_pk: int, token: str) -> bool:
    """claim() inside the caller's transaction. An instance whose version is not approved
    is never claimed: it is paused for that instead (workflows.hold), as claims.claim does.

    The tenant's row is locked while its activations are counted, so two workers
    can never both take the last free place under the tenant's concurrency cap. The
    lock is FOR NO KEY UPDATE: it must not wait for the tenant's starts, whose new rows'
    foreign keys hold a KEY SHARE lock on the same row until they commit.
    """
    now = timezone.now()
    tenant = (
        Tenant.objects.select_related("quota_row")
        .select_for_update(of=("self",), no_key=True)
        .filter(instances__pk=instance_pk)
        .first()
    )
    if tenant is None:
        return False
    if tenant.suspended_at is not None:
        workflows.hold(instance_pk)
        return False
    held = (
        Instance.objects.filter(tenant_id=tenant.pk, lease_expires_at__gte=now)
        .exclude(lease_owner="")
        .exclude(pk=instance_pk)
        .count()
    )
    if held >= tenant.quota.concurrent_activations:
        # Over the cap (a message sent before others took the places): due again.
        Instance.objects.filter(pk=instance_pk).update(dispatched_at=None)
        workflows.hold(instance_pk)  # if its version is not approved
        return False
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    claimed = (
        Instance.objects.filter(pk=instance_pk, status__in=Instance.ACTIVE_STATUSES)
        .filter(free, version__status=CodeVersion.Status.APPROVED)
        .update(
            lease_owner=token,
            lease_expires_at=now + lease_duration(),
            dispatched_at=None,
            activations=F("activations") + 1,
        )
    )
    if not claimed:
        workflows.hold(instance_pk)  # if its version is not approved
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


def load_claimed(instance_pk: int, token: str) -> tuple[Instance, list[Step]] | None:
    """The claimed instance, with its tenant, quota and version, and its steps (what
    claims.claim reads on PostgreSQL); None if the lease is not this activation's."""
    instance = Instance.objects.select_related("version", "tenant__quota_row").get(pk=instance_pk)
    if not holds_lease(instance, token) or instance.status not in Instance.ACTIVE_STATUSES:
        return None
    return instance, list(instance.steps.order_by("index"))


def prepare_activation(instance: Instance, steps: list[Step], token: str) -> Activation | None:
    """What the activation needs; in the claim's transaction, which holds the row."""
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
        instance_key=instance.key,
        tenant_id=instance.tenant_id,
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
        quota=quota,
        pending=pending,
        history_bytes=instance.history_bytes,
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
    # What the step received (an event's payload, a child's output) joins the history;
    # while suspended it held nothing.
    grown = outcomes.history_size(step)
    if grown:
        Instance.objects.filter(pk=instance.pk).update(history_bytes=F("history_bytes") + grown)
        instance.history_bytes += grown


def set_status(instance: Instance, status: str, **fields) -> None:
    now = timezone.now()
    instance.status = status
    instance.updated_at = now
    update = {"status": status, "updated_at": now, **fields}
    if status in Instance.TERMINAL_STATUSES:
        update.update(finished_at=now, next_run_at=None, lease_owner="", lease_expires_at=None)
    for name, value in update.items():
        setattr(instance, name, value)
    reserve_and_store(instance, [("instance.status", {"status": status})], **update)
    if status in Instance.TERMINAL_STATUSES:
        wake_waiting_parents(instance)


def wake_waiting_parents(child: Instance) -> None:
    for parent in Instance.objects.filter(
        steps__target=child, steps__status=Step.Status.WAITING
    ).distinct():
        if parent.status in Instance.ACTIVE_STATUSES:
            dispatch.run_now(parent)


def run_sandbox(activation: Activation) -> SandboxResult:
    quota = activation.quota
    request = SandboxRequest(
        tenant=str(activation.tenant_id),  # warm jails are keyed by it: never the editable slug
        code=activation.code,
        code_sha256=activation.code_sha256,
        input=activation.input,
        limits=limits_for(quota),
        mode="workflow",
        on_progress=activation.on_progress,
    )
    # Benchmarks only; get_sandbox refuses "unsandboxed" without STEPWELL_BENCH_UNSANDBOXED=1.
    mode = settings.STEPWELL_BENCH_SANDBOX_MODE or quota.sandbox_mode
    return get_sandbox(mode).run(request)


def mark_running(activation: Activation, intent: dict, started_at: datetime) -> Step | None:
    """Show the do step the runtime announced as running; returns its row if written.

    The row also tells a later activation which step a crashed worker was in.
    """
    with transaction.atomic():
        relaxed_commit()
        instance = Instance.objects.select_for_update(no_key=True).get(pk=activation.instance_pk)
        if instance.lease_owner != activation.token:
            return None
        step = Step.objects.filter(instance=instance, index=intent["index"]).first()
        if step is not None and step.status in Step.RESOLVED_STATUSES:
            return None
        if step is None:
            step = Step(instance=instance, index=intent["index"], kind=Step.Kind.DO)
        step.name = intent["name"]
        step.status = Step.Status.RUNNING
        step.started_at = started_at
        step.finished_at = None
        step.config = {
            "retries": intent.get("retries") or outcomes.DEFAULT_RETRIES,
            "timeout_seconds": intent.get("timeout_seconds"),
        }
        step.save()
        record_event(instance, "step.started", step=step_summary(step))
        return step


def relaxed_commit() -> None:
    """Let this transaction commit without waiting for the disk.

    Only for bookkeeping that may be lost in an operating-system crash without harm:
    a lease (it lapses and is claimed again), a step shown as running (it runs
    again), a wait settled at a claim (it is settled again the same way). PostgreSQL
    still writes it in order, and the next full commit writes it to disk too; a
    database restart loses nothing. Outcomes are always committed in full.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def watch(activation: Activation) -> Watch:
    """The timers of one activation: its lease renewed, its step shown as running."""

    def renew() -> None:
        Instance.objects.filter(pk=activation.instance_pk, lease_owner=activation.token).update(
            lease_expires_at=timezone.now() + lease_duration()
        )

    return Watch(mark=lambda intent, at: mark_running(activation, intent, at), renew=renew)


def announced(watch: Watch) -> Callable[[dict], None]:
    """The sandbox's progress callback: a valid do-step intent goes to the watch."""

    def on_progress(note: dict) -> None:
        if note.get("kind") != "intent":
            return
        try:
            intent = outcomes.check_outcome({**note, "kind": "step"})
        except outcomes.InvalidOutcome:
            return
        watch.announce(intent)

    return on_progress
