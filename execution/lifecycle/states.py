"""An instance's status: every change of it, and the pauses that staff decisions make."""

from __future__ import annotations

import functools
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from execution import twins
from execution.lifecycle import due, notices
from execution.models import CodeVersion, Instance, Step
from execution.progress import record_event, reserve_and_store
from lib import metrics, rows
from tenants.models import Tenant


def set_status(instance: Instance, status: str, *, listened: bool | None = None, **fields) -> None:
    """Change the status (and `fields`) by the UPDATE that stores its progress event; an
    ended instance is due never again and holds no lease, and its waiting parents are due.
    `listened`: whether a webhook wants the change, if the caller read it already."""
    now = timezone.now()
    instance.status = status
    instance.updated_at = now
    update = {"status": status, "updated_at": now, **fields}
    if status in Instance.TERMINAL_STATUSES:
        update.update(finished_at=now, next_run_at=None, lease_owner="", lease_expires_at=None)
    for name, value in update.items():
        setattr(instance, name, value)
    data = {"status": status}
    if status == Instance.Status.ERRORED:
        data["error"] = update.get("error")  # why, so a live client needs no second request
    reserve_and_store(instance, [("instance.status", data)], **update)
    notices.announce(instance.pk, instance.tenant_id, status, listened=listened)
    if status in Instance.TERMINAL_STATUSES:
        metrics.INSTANCES_FINISHED.labels(status).inc()
        wake_waiting_parents(instance)


def start_running(instance: Instance, *, listened: bool | None = None) -> None:
    """A claimed instance is running (at its claim, in the claim's transaction).
    `listened`: whether a webhook wants `instance.running`, if the claim read it."""
    if instance.status != Instance.Status.RUNNING:
        set_status(instance, Instance.Status.RUNNING, listened=listened)


def suspend_running(instance: Instance, status: str) -> None:
    """The instance waits (sleeping, or waiting for an event or a child)."""
    set_status(instance, status)


def finish(instance: Instance, status: str, **fields) -> None:
    """End the instance (complete, errored, terminated): see set_status."""
    set_status(instance, status, **fields)


def wake_waiting_parents(child: Instance) -> None:
    """Make the active instances that wait for the ended `child` due. Every instance's end
    asks, and almost never finds one: only the two columns make_due needs are read, on
    PostgreSQL by a statement prepared on the server (waiting_parents_statement), whose
    ORM twin cost a worker 0.9 ms per end (bench/README.md, session 7). The end of run()
    asks within its own statement (records.end_statement) and calls wake_parents."""
    if twins.hand_written():
        with rows.cursor() as cursor:
            cursor.execute(waiting_parents_statement(), waiting_parents_params(child.pk))
            parents = cursor.fetchall()
    else:
        parents = (
            Instance.objects.filter(
                steps__target=child,
                steps__status=Step.Status.WAITING,
                status__in=Instance.ACTIVE_STATUSES,
            )
            .values_list("pk", "tenant_id")
            .distinct()
        )
    wake_parents(parents)


def wake_parents(parents) -> None:
    """Make due each (pk, tenant id) of instances found waiting for an ended child."""
    for pk, tenant_id in parents:
        due.make_due(Instance(pk=pk, tenant_id=tenant_id))


@functools.cache
def waiting_parents_statement() -> str:
    """The (id, tenant_id) of active instances waiting for a child; its parameters are
    waiting_parents_params'."""
    qn = connection.ops.quote_name
    return (
        f"SELECT DISTINCT i.id, i.tenant_id FROM {qn(Instance._meta.db_table)} i "
        f"JOIN {qn(Step._meta.db_table)} s ON s.instance_id = i.id "
        f"WHERE s.target_id = %s AND s.status = '{Step.Status.WAITING.value}' "
        "AND i.status = ANY(%s)"
    )


def waiting_parents_params(child_pk: int) -> list:
    return [child_pk, list(Instance.ACTIVE_STATUSES)]


class Hold(NamedTuple):
    """A staff decision that keeps an instance from running."""

    reason: str  # an Instance.PauseReason
    message: str  # what the tenant is told


def suspension(tenant: Tenant) -> str:
    return f"tenant {tenant.slug!r} is suspended"


def hold_of(instance: Instance, version_id: int | None = None) -> Hold | None:
    """What keeps the instance from running now, if anything: its tenant suspended, or its
    version (or the one given, that it is about to run) not approved (awaiting review,
    rejected, quarantined). Read afresh."""
    tenant = Tenant.objects.only("slug", "suspended_at").get(pk=instance.tenant_id)
    if tenant.suspended_at is not None:
        return Hold(Instance.PauseReason.SUSPENSION, suspension(tenant))
    version = CodeVersion.objects.only("sha256", "status", "status_reason").get(
        pk=version_id or instance.version_id
    )
    if not version.may_run:
        return Hold(version.pause_reason(), version.refusal())
    return None


def pause(instance: Instance, reason: str) -> None:
    """Pause the locked, active instance for `reason`. Dropping the lease (and a new
    generation) makes any step in flight record nothing; it runs again on resume."""
    set_status(
        instance,
        Instance.Status.PAUSED,
        status_before_pause=instance.status,
        paused_reason=reason,
        lease_owner="",
        lease_expires_at=None,
        generation=instance.generation + 1,
    )


@transaction.atomic
def hold(instance_pk: int) -> Hold | None:
    """Pause the active instance for what keeps it from running, if anything does; what a
    claim does when it finds a staff decision in the way. It then waits, holding no
    worker and not due, until staff lift the decision (moderation.resume_all)."""
    instance = Instance.objects.select_for_update().filter(pk=instance_pk).first()
    if instance is None or instance.status not in Instance.ACTIVE_STATUSES:
        return None
    found = hold_of(instance)
    if found is not None:
        pause(instance, found.reason)
    return found


def repause(instances: QuerySet, reasons: tuple[str, ...], reason: str) -> int:
    """Paused instances held for one of `reasons` are held for `reason` now (another
    staff decision), so that lifting that one resumes them."""
    paused = instances.filter(status=Instance.Status.PAUSED, paused_reason__in=reasons)
    return paused.update(paused_reason=reason)


def unpause(instance: Instance) -> None:
    """The locked, paused instance goes on where it stopped, due now."""
    status = instance.status_before_pause or Instance.Status.QUEUED
    if status == Instance.Status.RUNNING:
        status = Instance.Status.QUEUED
    set_status(instance, status, status_before_pause="", paused_reason="")
    record_event(instance, "instance.resumed")
    due.make_due(instance)


def terminate(instance: Instance) -> None:
    """End the locked instance; a new generation drops what a step in flight reports,
    and its unfinished step (running, awaiting a retry, sleeping, waiting) is cancelled."""
    unfinished = instance.steps.exclude(status__in=[*Step.RESOLVED_STATUSES, Step.Status.CANCELLED])
    unfinished.update(status=Step.Status.CANCELLED, wake_at=None, finished_at=timezone.now())
    finish(
        instance,
        Instance.Status.TERMINATED,
        generation=instance.generation + 1,
        error={"type": "Terminated", "message": "the instance was terminated"},
    )


def restart(instance: Instance, *, version: CodeVersion, history_bytes: int) -> None:
    """The locked instance begins its next run on `version`, due now; its earlier run is
    archived and its discarded steps deleted already (runs.restart), and what the steps
    it kept hold is `history_bytes`. A new generation drops what a step in flight reports."""
    set_status(
        instance,
        Instance.Status.QUEUED,
        output=None,
        error=None,
        finished_at=None,
        status_before_pause="",
        paused_reason="",
        lease_owner="",
        lease_expires_at=None,
        generation=instance.generation + 1,
        history_bytes=history_bytes,
        sandbox_failures=0,
        run=instance.run + 1,
        run_started_at=timezone.now(),
        version_id=version.pk,
    )
    instance.version = version
    due.make_due(instance)
