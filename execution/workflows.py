"""What tenants do to workflows and instances: upload code, start, signal, control."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from execution import dispatch
from execution.models import CodeVersion, Event, Instance, Step, Workflow
from execution.progress import record_event
from execution.validation import ValidationReport, validate_code
from tenants.models import Tenant


class StartError(Exception):
    """The instance cannot start (a missing or unapproved version, a quota)."""


class StateConflict(Exception):
    """The instance's state does not allow the action (HTTP 409)."""


class CodeRejected(Exception):
    def __init__(self, report: ValidationReport):
        super().__init__("the code is not valid")
        self.report = report


@dataclass
class Upload:
    workflow: Workflow
    version: CodeVersion
    created: bool


def check_code(code: str) -> ValidationReport:
    return validate_code(code, max_bytes=settings.STEPWELL_MAX_CODE_BYTES)


@transaction.atomic
def upload_version(tenant: Tenant, name: str, code: str, description: str | None = None) -> Upload:
    """Make `code` the workflow's current version; an unchanged upload makes nothing new."""
    report = check_code(code)
    if not report.ok:
        raise CodeRejected(report)
    workflow, _ = Workflow.objects.select_for_update().get_or_create(tenant=tenant, name=name)
    if description is not None and description != workflow.description:
        workflow.description = description
    sha = CodeVersion.hash_code(code)
    version = workflow.versions.filter(sha256=sha).first()
    created = version is None
    if created:
        status = (
            CodeVersion.Status.PENDING_REVIEW
            if tenant.review_policy == Tenant.ReviewPolicy.MANUAL
            else CodeVersion.Status.APPROVED
        )
        version = CodeVersion.objects.create(
            tenant=tenant,
            workflow=workflow,
            code=code,
            status=status,
            flags=[f.as_dict() for f in report.flags],
        )
    created = created or workflow.current_version_id != version.pk
    workflow.current_version = version
    workflow.updated_at = timezone.now()
    workflow.save()
    return Upload(workflow=workflow, version=version, created=created)


def start_instance(
    workflow: Workflow,
    *,
    payload: dict | None = None,
    key: str | None = None,
    version_sha: str | None = None,
    parent: Instance | None = None,
) -> tuple[Instance, bool]:
    """Start an instance, or return the one already started with this key.

    Returns (instance, created).
    """
    from execution.quotas import check_running

    tenant = workflow.tenant
    if key:
        existing = Instance.objects.for_tenant(tenant).filter(key=key).first()
        if existing is not None:
            return existing, False
    version = pick_version(workflow, version_sha)
    try:
        with transaction.atomic():
            fields = {"key": key} if key else {}
            instance = Instance.objects.create(
                tenant=tenant,
                workflow=workflow,
                version=version,
                payload=payload or {},
                parent=parent,
                **fields,
            )
            record_event(instance, "instance.status", status=instance.status)
            dispatch.run_now(instance)
            # Last, just before the commit: it locks the tenant's quota row.
            check_running(tenant, started=instance)  # raises QuotaExceeded, a StartError
    except IntegrityError:
        # Two starts with the same key raced; the other one won.
        existing = Instance.objects.for_tenant(tenant).filter(key=key).first()
        if existing is None:
            raise
        return existing, False
    return instance, True


def pick_version(workflow: Workflow, version_sha: str | None) -> CodeVersion:
    if workflow.tenant.suspended_at is not None:
        raise StartError(f"tenant {workflow.tenant.slug!r} is suspended")
    if version_sha:
        version = workflow.versions.filter(sha256=version_sha).first()
        if version is None:
            raise StartError(f"workflow {workflow.name!r} has no version {version_sha}")
    else:
        # Read it afresh: a caller's Workflow object may predate the latest upload.
        workflow.refresh_from_db(fields=["current_version"])
        version = workflow.current_version
        if version is None:
            raise StartError(f"workflow {workflow.name!r} has no code yet")
    if version.status != CodeVersion.Status.APPROVED:
        reason = f": {version.status_reason}" if version.status_reason else ""
        raise StartError(f"version {version.sha256[:12]} is {version.status}{reason}")
    return version


@transaction.atomic
def send_event(instance: Instance, type_: str, payload=None) -> Event:
    instance = Instance.objects.select_for_update().get(pk=instance.pk)
    event = Event.objects.create(instance=instance, type=type_, payload=payload)
    waiting = instance.steps.filter(
        status=Step.Status.WAITING, kind=Step.Kind.WAIT_FOR_EVENT, event_type=type_
    ).exists()
    if waiting and instance.status in Instance.ACTIVE_STATUSES:
        dispatch.run_now(instance)
    return event


def _locked(instance: Instance) -> Instance:
    return Instance.objects.select_for_update().get(pk=instance.pk)


@transaction.atomic
def pause(instance: Instance, reason: str = "user") -> Instance:
    from execution.engine import set_status

    instance = _locked(instance)
    if instance.status not in Instance.ACTIVE_STATUSES:
        raise StateConflict(f"a {instance.status} instance cannot be paused")
    before = instance.status
    # Dropping the lease makes any step in flight record nothing; it runs again on resume.
    set_status(
        instance,
        Instance.Status.PAUSED,
        status_before_pause=before,
        paused_reason=reason,
        lease_owner="",
        lease_expires_at=None,
        generation=instance.generation + 1,
    )
    return instance


@transaction.atomic
def resume(instance: Instance) -> Instance:
    from execution.engine import set_status

    instance = _locked(instance)
    if instance.status != Instance.Status.PAUSED:
        raise StateConflict(f"a {instance.status} instance cannot be resumed")
    status = instance.status_before_pause or Instance.Status.QUEUED
    if status == Instance.Status.RUNNING:
        status = Instance.Status.QUEUED
    set_status(instance, status, status_before_pause="", paused_reason="")
    record_event(instance, "instance.resumed")
    dispatch.run_now(instance)
    return instance


@transaction.atomic
def terminate(instance: Instance) -> Instance:
    from execution.engine import set_status

    instance = _locked(instance)
    if instance.is_terminal:
        raise StateConflict(f"a {instance.status} instance cannot be terminated")
    set_status(
        instance,
        Instance.Status.TERMINATED,
        generation=instance.generation + 1,
        error={"type": "Terminated", "message": "the instance was terminated"},
    )
    return instance


@transaction.atomic
def restart(instance: Instance) -> Instance:
    """Run again from the start, on the same version, with the same payload."""
    from execution.engine import set_status

    instance = _locked(instance)
    instance.steps.all().delete()
    set_status(
        instance,
        Instance.Status.QUEUED,
        output=None,
        error=None,
        finished_at=None,
        status_before_pause="",
        lease_owner="",
        lease_expires_at=None,
        generation=instance.generation + 1,
    )
    dispatch.run_now(instance)
    return instance
