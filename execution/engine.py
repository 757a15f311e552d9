"""The durable engine: one activation of an instance runs at most one new step.

advance() claims the instance with a lease, settles the step it was suspended on
(a sleep that is over, an event that arrived, a child that ended), runs the
sandbox once with the recorded history, and records what came back in one
transaction that also decides what happens next (outcomes). The words are defined
in execution.lifecycle's glossary; every change of an instance's status, lease or
dispatch columns goes through it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from execution import outcomes
from execution.activation import Activation, Next
from execution.kinds import history_error, history_size
from execution.lifecycle import due, known_steps, leases, states
from execution.models import Instance, Step
from execution.outcome_checks import DEFAULT_RETRIES, InvalidOutcome, check_outcome
from execution.progress import record_event, started, step_summary
from execution.redaction import Redactor
from execution.sandbox import SandboxRequest, SandboxResult, Status, get_sandbox
from execution.step_limits import limits_for
from execution.watch import Watch
from lib import logs, metrics
from tenants.secrets import decrypted, values_for

log = logging.getLogger(__name__)

__all__ = ["Activation", "advance", "begin", "execute"]


def advance(instance_pk: int) -> None:
    """Run activations of the instance while its next step is ready, within a budget.

    Going on in the same task saves a trip through the broker and a claim per step;
    after a completed do step it also keeps the lease and the history it already
    holds, so the next activation starts without reading anything. The budget hands
    the worker back to the queue so other instances get their turn.
    """
    deadline = time.monotonic() + settings.STEPWELL_INLINE_SECONDS
    with logs.bound(instance=instance_pk):
        activation = begin(instance_pk)
        while activation is not None:
            keep = time.monotonic() < deadline
            following = execute(activation, keep=keep)
            if following is Next.AGAIN:
                # Ready again, but the lease was given back: claim it anew.
                activation = begin(instance_pk, was_kept=True)
            else:
                activation = following if isinstance(following, Activation) else None


def begin(instance_pk: int, *, was_kept: bool = False) -> Activation | None:
    """Claim the instance and read what its activation needs, in one transaction."""
    token = uuid.uuid4().hex
    with transaction.atomic():
        claimed = leases.claim(instance_pk, token)
        activation = prepare_activation(*claimed, token) if claimed else None
    if claimed is None and was_kept:
        due.send_kept(instance_pk)
    if activation is not None:
        # Read per claim (with the tenant's lock on PostgreSQL), so a secret set or
        # deleted meanwhile counts from the next one; decrypted after the commit.
        reads = leases.reads_of(claimed[0])
        tenant_id = activation.tenant_id
        activation.secrets = (
            decrypted(tenant_id, reads.secret_pairs) if reads else values_for(tenant_id)
        )
    return activation


def execute(activation: Activation, *, keep: bool) -> Activation | Next:
    """Run the activation and record its outcome, its ids on every log line (even the
    sandbox's and the watcher's threads'); returns what outcomes.record does."""
    with logs.bound(**log_ids(activation)):
        log.debug("activation runs step %s", activation.next_index())
        following = run_and_record(activation, keep=keep)
        log.debug("activation recorded: %s", getattr(following, "value", "next step"))
        return following


def log_ids(activation: Activation) -> dict:
    """What every log line of the activation names (lib.logs)."""
    return {
        "tenant": activation.tenant_id,
        "instance": activation.instance_pk,
        "instance_key": activation.instance_key,
        "step": activation.next_index(),
        "activation": activation.token,
    }


def run_and_record(activation: Activation, *, keep: bool) -> Activation | Next:
    """An error here counts as a sandbox failure: a few in a row error the instance, so
    that nothing an instance holds can make the engine retry it forever.

    A warm jail's child kept after this activation's step (sticky execution) goes to the
    next Activation, if there is one; else it is ended here, whatever happened."""
    limit = activation.quota.history_bytes
    began = time.perf_counter()
    result: SandboxResult | None = None
    handed = False
    try:
        if activation.history_bytes > limit:  # recorded before the quota, or lowered since
            outcomes.record_error(activation, history_error(limit))
            return Next.DONE
        redactor = Redactor(activation.secrets)
        with watch(activation) as watching:
            # The sandbox calls back from its reader thread: with this activation's ids.
            activation.on_progress = functools.partial(
                contextvars.copy_context().run, announced(watching, redactor)
            )
            # The one door by which a jail's answer enters the engine: redacted here.
            raw = run_sandbox(activation, keep=keep)
            result = redactor.result(raw)
        activation.marked = watching.marked
        activation.ran_ahead_as_recorded = not redactor or output_of(raw) == output_of(result)
        following = outcomes.record(activation, result, keep=keep)
        observe(activation, result, time.perf_counter() - began)
        if (
            isinstance(following, Activation)
            and result.kept is not None
            and activation.ran_ahead_as_recorded
        ):
            following.kept, handed = result.kept, True
        return following
    except Exception as exc:
        metrics.SANDBOX_FAILURES.labels("engine").inc()
        log.exception("activation of instance %s failed in the engine", activation.instance_pk)
        try:
            outcomes.record_failure(activation, f"{type(exc).__name__} in the engine")
        except Exception:
            log.exception("could not count the failure of instance %s", activation.instance_pk)
            leases.release(
                activation.instance_pk, activation.token, retry_in=outcomes.SANDBOX_RETRY
            )
        raise
    finally:
        close_kept(activation.kept)
        activation.kept = None
        if result is not None and not handed:
            close_kept(result.kept)


def output_of(result: SandboxResult):
    """The result a do step's outcome holds, if it is one (what a kept child goes on with)."""
    outcome = result.result
    return outcome.get("output") if isinstance(outcome, dict) else None


def close_kept(kept) -> None:
    """End a kept child that no activation will resume; never raises (the jail is then
    killed and replaced by the pool)."""
    if kept is None:
        return
    try:
        kept.close()
    except Exception:
        log.exception("could not end a kept child")


def observe(activation: Activation, result: SandboxResult, seconds: float) -> None:
    """An activation's figures: its time in the sandbox, the rest, and how it ended."""
    mode = activation.sandbox_mode
    metrics.ACTIVATIONS.labels(result.status, mode).inc()
    metrics.OVERHEAD_SECONDS.labels(mode).observe(max(0.0, seconds - activation.step_seconds))
    if result.status != Status.OK:
        metrics.SANDBOX_FAILURES.labels(result.status).inc()


def prepare_activation(instance: Instance, steps: list[Step], token: str) -> Activation | None:
    """What the activation needs; in the claim's transaction, which holds the row. None if
    the step it is suspended on is not settled yet: then the lease goes back and the
    instance is due when it can be."""
    observe_lag(instance.next_run_at)
    last = steps[-1] if steps else None
    pending = None
    if last is not None and last.status not in Step.RESOLVED_STATUSES:
        not_before = settle(instance, last)
        if not_before is not None:
            leases.release(instance.pk, token)
            due.make_due_at(instance, not_before)
            return None
        if last.status not in Step.RESOLVED_STATUSES:
            pending = last
    reads = leases.reads_of(instance)
    states.start_running(instance, listened=reads.running_listened if reads else None)
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
            "history": known_steps.history_of(instance, steps),
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
    if step.status == Step.Status.SLEEPING:
        return settle_sleep(instance, step)
    if step.status == Step.Status.WAITING and step.kind == Step.Kind.WAIT_FOR_EVENT:
        return settle_event_wait(instance, step)
    if step.status == Step.Status.WAITING and step.kind == Step.Kind.WAIT_FOR_WORKFLOW:
        return settle_child_wait(instance, step)
    if step.status == Step.Status.FAILED and step.wake_at:
        if step.wake_at > timezone.now():
            return step.wake_at  # a do step's retry, after its backoff
        observe_lateness("retry", step.wake_at)
    return None


def observe_lag(due_at: datetime | None) -> None:
    """From the time the claimed instance was due to its claim (now)."""
    if due_at is not None:
        metrics.QUEUE_LAG.observe(max(0.0, (timezone.now() - due_at).total_seconds()))


def observe_lateness(kind: str, wake_at: datetime) -> None:
    """How late a timer (sleep, retry or wait timeout) is resolved, from its wake_at."""
    metrics.TIMER_LATENESS.labels(kind).observe(
        max(0.0, (timezone.now() - wake_at).total_seconds())
    )


def settle_sleep(instance: Instance, step: Step) -> datetime | None:
    if step.wake_at > timezone.now():
        return step.wake_at
    observe_lateness("sleep", step.wake_at)
    finish_step(instance, step, Step.Status.COMPLETE, output=None)
    record_event(instance, "instance.resumed", step=step_summary(step))
    return None


def settle_event_wait(instance: Instance, step: Step) -> datetime | None:
    """The oldest unconsumed event of the awaited type is the step's result."""
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
    if step.wake_at > timezone.now():
        return step.wake_at
    observe_lateness("timeout", step.wake_at)
    error = {"type": "WaitTimeout", "message": f"no {step.event_type!r} event arrived in time"}
    finish_step(instance, step, Step.Status.TIMED_OUT, error=error)
    record_event(instance, "step.timed_out", step=step_summary(step), error=error)
    return None


def settle_child_wait(instance: Instance, step: Step) -> datetime | None:
    """The awaited child's output (or its error) is the step's result once it ended."""
    child = step.target
    if child is None:
        error = {"type": "WorkflowNotFound", "message": "the awaited instance is gone"}
        finish_step(instance, step, Step.Status.ERRORED, error=error)
        return None
    if child.is_terminal:
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
    if step.wake_at > timezone.now():
        return step.wake_at
    observe_lateness("timeout", step.wake_at)
    error = {"type": "WaitTimeout", "message": f"instance {child.key} did not end in time"}
    finish_step(instance, step, Step.Status.TIMED_OUT, error=error)
    record_event(instance, "step.timed_out", step=step_summary(step), error=error)
    return None


def finish_step(instance: Instance, step: Step, status: str, *, output=None, error=None) -> None:
    step.status = status
    step.output = output
    step.error = error
    step.finished_at = timezone.now()
    step.save(update_fields=["status", "output", "error", "finished_at"])
    # What the step received (an event's payload, a child's output) joins the history;
    # while suspended it held nothing.
    grown = history_size(step)
    if grown:
        Instance.objects.filter(pk=instance.pk).update(history_bytes=F("history_bytes") + grown)
        instance.history_bytes += grown


def run_sandbox(activation: Activation, *, keep: bool = False) -> SandboxResult:
    """The activation's step in its tenant's sandbox: in the child kept from the step
    before, if there is one and it can go on (sticky execution), else as a new run whose
    child may be kept after a completed do step if `keep`."""
    quota = activation.quota
    request = SandboxRequest(
        tenant=str(activation.tenant_id),  # warm jails are keyed by it: never the editable slug
        code=activation.code,
        code_sha256=activation.code_sha256,
        input=activation.input,
        limits=limits_for(quota),
        mode="workflow",
        on_progress=activation.on_progress,
        secrets=activation.secrets,
    )
    kept, activation.kept = activation.kept, None
    if kept is not None:
        history = activation.input["history"]
        last = history[-1] if history else {}
        if activation.pending is None and last.get("status") == "complete":
            result = kept.resume(request, last.get("output"), activation.input["now"])
            if result is not None:
                return result
        close_kept(kept)
    return get_sandbox(activation.sandbox_mode).run(request, keep=keep)


def mark_running(activation: Activation, intent: dict, started_at: datetime) -> Step | None:
    """Show the do step the runtime announced as running; returns its row if written.

    The row also tells a later activation which step a crashed worker was in.
    """
    with transaction.atomic():
        leases.relaxed_commit()
        instance = Instance.objects.select_for_update(no_key=True).get(pk=activation.instance_pk)
        if not leases.holds(instance, activation.token):
            return None
        step = Step.objects.filter(instance=instance, index=intent["index"]).first()
        if step is not None and step.status in Step.RESOLVED_STATUSES:
            return None
        if step is None:
            step = Step(instance=instance, index=intent["index"], kind=Step.Kind.DO)
        before = history_size(step)
        step.begin_attempt()  # a retry: the failed attempt is kept before it is overwritten
        step.name = intent["name"]
        step.status = Step.Status.RUNNING
        step.started_at = started_at
        step.finished_at = None
        step.config = {
            "retries": intent.get("retries") or DEFAULT_RETRIES,
            "timeout_seconds": intent.get("timeout_seconds"),
        }
        step.save()
        grown = history_size(step) - before
        if grown:
            Instance.objects.filter(pk=instance.pk).update(history_bytes=F("history_bytes") + grown)
            activation.history_bytes += grown
        record_event(instance, "step.started", **started(step))
        return step


def watch(activation: Activation) -> Watch:
    """The timers of one activation: its lease renewed, its step shown as running."""

    return Watch(
        mark=lambda intent, at: mark_running(activation, intent, at),
        renew=lambda: leases.renew(activation.instance_pk, activation.token),
    )


def announced(watch: Watch, redactor: Redactor) -> Callable[[dict], None]:
    """The sandbox's progress callback: a valid do-step intent, its secrets redacted (the
    step's name is shown), goes to the watch."""

    def on_progress(note: dict) -> None:
        if note.get("kind") != "intent":
            return
        try:
            intent = check_outcome({**redactor.value(note), "kind": "step"})
        except InvalidOutcome:
            return
        watch.announce(intent)

    return on_progress
