"""Workflows, their immutable code versions, instances, steps, events and progress."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Tenant

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def new_instance_key() -> str:
    return uuid.uuid4().hex


class TenantQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant):
        return self.filter(tenant=tenant)


class Workflow(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    current_version = models.ForeignKey(
        "CodeVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="workflow_name_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class CodeVersion(models.Model):
    """One immutable version of a workflow's code, addressed by the SHA-256 of its text."""

    class Status(models.TextChoices):
        APPROVED = "approved"
        PENDING_REVIEW = "pending_review"
        REJECTED = "rejected"
        QUARANTINED = "quarantined"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="code_versions")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    sha256 = models.CharField(max_length=64)
    code = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.APPROVED)
    status_reason = models.TextField(blank=True, default="")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "sha256"], name="version_hash_per_workflow")
        ]
        indexes = [
            # The review queue's length and age (execution.overview); versions wait rarely.
            models.Index(
                fields=["created_at"],
                condition=models.Q(status="pending_review"),
                name="version_review_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} @ {self.sha256[:12]}"

    @staticmethod
    def hash_code(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    @property
    def may_run(self) -> bool:
        return self.status == self.Status.APPROVED

    def pause_reason(self) -> str:
        """What its instances are paused for while staff keep it from running ("" if not)."""
        return Instance.HELD_BY_VERSION.get(self.status, "")

    def refusal(self) -> str:
        """Why it may not run, with the reason staff gave, as the tenant is told."""
        reason = f": {self.status_reason}" if self.status_reason else ""
        return f"version {self.sha256[:12]} is {self.status}{reason}"

    def save(self, *args, **kwargs):
        if self.pk is None:
            self.sha256 = self.hash_code(self.code)
        elif CodeVersion.objects.filter(pk=self.pk).exclude(code=self.code).exists():
            raise ValueError("code versions are immutable; upload a new version instead")
        super().save(*args, **kwargs)


class Instance(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        PAUSED = "paused"
        SLEEPING = "sleeping"
        WAITING = "waiting"
        COMPLETE = "complete"
        ERRORED = "errored"
        TERMINATED = "terminated"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.SLEEPING, Status.WAITING)
    TERMINAL_STATUSES = (Status.COMPLETE, Status.ERRORED, Status.TERMINATED)

    class PauseReason(models.TextChoices):
        """Who paused it: the tenant, or a staff decision that keeps it from running."""

        USER = "user"
        SUSPENSION = "suspension"
        REVIEW = "review"  # its version awaits review
        REJECTION = "rejection"
        QUARANTINE = "quarantine"

    # A version staff keep from running holds its instances, paused for this reason.
    HELD_BY_VERSION = {
        CodeVersion.Status.PENDING_REVIEW: PauseReason.REVIEW,
        CodeVersion.Status.REJECTED: PauseReason.REJECTION,
        CodeVersion.Status.QUARANTINED: PauseReason.QUARANTINE,
    }

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="instances")
    # The public id: chosen by the client for an idempotent start, else a UUID. Unique
    # per tenant only, so one tenant's ids say nothing about another's.
    key = models.CharField(max_length=100, default=new_instance_key)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="instances")
    version = models.ForeignKey(CodeVersion, on_delete=models.PROTECT, related_name="instances")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    status_before_pause = models.CharField(max_length=20, blank=True, default="")
    # Who paused it (PauseReason), so that lifting a staff decision resumes only what
    # that decision paused, and a tenant resumes only its own pauses.
    paused_reason = models.CharField(
        max_length=20, blank=True, default="", choices=PauseReason.choices
    )
    payload = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # Dispatch bookkeeping: when the clock should next hand this instance to a worker,
    # and who holds it now. The truth about timers lives on the step rows.
    next_run_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When it was last sent to Celery; it counts as in flight until a worker claims it
    # or the redispatch delay passes.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    generation = models.PositiveIntegerField(default=0)
    last_seq = models.PositiveBigIntegerField(default=0)
    activations = models.PositiveIntegerField(default=0)
    # The JSON size of its steps' recorded results and errors plus their logs' length,
    # kept up to date by the statement that records a step (Quota.history_bytes).
    history_bytes = models.BigIntegerField(default=0)
    # Activations in a row that the sandbox (or the engine) failed to run.
    sandbox_failures = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="instance_key_per_tenant")
        ]
        indexes = [
            models.Index(fields=["status", "next_run_at"], name="instance_dispatch"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="instance_tenant_status"
            ),
            models.Index(fields=["workflow", "-created_at", "-id"], name="instance_workflow"),
            models.Index(fields=["tenant", "-created_at", "-id"], name="instance_listing"),
            # Recent errors for the staff overview. Only an instance's end writes to it, so
            # the updates of every step stay HOT (outcomes.held_columns).
            models.Index(
                fields=["finished_at"],
                condition=models.Q(status="errored"),
                name="instance_errored",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} #{self.key}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


class Step(models.Model):
    class Kind(models.TextChoices):
        DO = "do"
        SLEEP = "sleep"
        WAIT_FOR_EVENT = "wait_for_event"
        START_WORKFLOW = "start_workflow"
        WAIT_FOR_WORKFLOW = "wait_for_workflow"

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETE = "complete"
        FAILED = "failed"
        ERRORED = "errored"
        SLEEPING = "sleeping"
        WAITING = "waiting"
        TIMED_OUT = "timed_out"
        CANCELLED = "cancelled"  # unfinished when its instance was terminated

    RESOLVED_STATUSES = (Status.COMPLETE, Status.ERRORED, Status.TIMED_OUT)

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=30, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices)
    attempts = models.PositiveIntegerField(default=0)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    logs = models.TextField(blank=True, default="")
    # A retried do step's attempts before the one the row describes, oldest first, as
    # attempts_detail shows them. Bounded by the retry limit (each entry's logs capped as
    # the row's are) and counted in the instance's history_bytes; an activation never
    # reads it (lifecycle.leases defers it with the logs).
    earlier_attempts = models.JSONField(default=list, blank=True)
    # sleep: when to wake; retry: when to try again; waits: the deadline.
    wake_at = models.DateTimeField(null=True, blank=True)
    event_type = models.CharField(max_length=200, blank=True, default="")
    target = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="waiting_steps"
    )
    config = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["instance", "index"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "index"], name="one_step_per_index")
        ]
        indexes = [models.Index(fields=["target", "status"], name="step_waiting_on")]

    def __str__(self) -> str:
        return f"{self.instance} step {self.index} {self.name!r}"

    def attempt_entry(self) -> dict:
        """The attempt the row itself describes, as attempts_detail shows it."""
        return {
            "attempt": len(self.earlier_attempts) + 1,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            # A do step errors when its last attempt failed.
            "status": "failed"
            if self.kind == self.Kind.DO and self.status == self.Status.ERRORED
            else self.status,
            "error": self.error,
            "logs": self.logs,
        }

    def attempts_kept(self) -> list[dict]:
        """earlier_attempts once a new attempt begins: a failed attempt joins them."""
        if self.kind != self.Kind.DO or self.status != self.Status.FAILED:
            return self.earlier_attempts
        return [*self.earlier_attempts, self.attempt_entry()]

    def begin_attempt(self) -> None:
        """Keep the last attempt, if it failed, before a new one overwrites its times,
        error and logs (at the running mark, or when the new attempt is recorded)."""
        if self.kind == self.Kind.DO and self.status == self.Status.FAILED:
            self.earlier_attempts = self.attempts_kept()
            self.error, self.logs, self.finished_at = None, "", None

    def attempts_detail(self) -> list[dict]:
        """Every attempt, oldest first: what API.md's `attempts_detail` lists."""
        return [*self.earlier_attempts, self.attempt_entry()]

    def waiting_for(self) -> dict | None:
        """What a waiting step expects: an event type, or a child instance."""
        if self.status != self.Status.WAITING:
            return None
        if self.kind == self.Kind.WAIT_FOR_EVENT:
            return {"event_type": self.event_type}
        return {"instance": self.target.key if self.target_id else None}

    def as_history(self) -> dict:
        """What the sandbox runtime replays from."""
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "output": self.output,
            "error": None
            if self.error is None
            else {
                "type": self.error.get("type", "Error"),
                "message": self.error.get("message", ""),
            },
        }


class Event(models.Model):
    """An event sent to an instance; consumed by at most one wait_for_event step."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    consumed_by = models.OneToOneField(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="event"
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["instance", "type"], name="event_lookup"),
            # The events-per-minute quota counts a tenant's recent events.
            models.Index(fields=["created_at"], name="event_recent"),
        ]


class ProgressEvent(models.Model):
    """The per-instance log of state changes that live clients replay after `?after=N`."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="progress")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["instance", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "seq"], name="one_event_per_seq")
        ]
