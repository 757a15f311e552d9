"""Workflows, their immutable code versions, instances, steps, events and progress."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.models import Tenant

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_KEY_LENGTH = 250


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

    # No index of its own: composite indexes (Meta) begin with it, and each index is
    # written at every insert and every update that is not HOT (a claim, an outcome given
    # back); on a million instances, a cache miss each.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="instances", db_index=False
    )
    # The public id: chosen by the client for an idempotent start, else a UUID. Unique
    # per tenant only, so one tenant's ids say nothing about another's. A client's id
    # has at most 100 characters; the ids the platform makes from names are longer
    # (`schedule:{schedule}:{time}`, `event:{workflow}:{event id}`).
    key = models.CharField(max_length=MAX_KEY_LENGTH, default=new_instance_key)
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
    # Which run of the instance its steps belong to: a restart archives the current run
    # (Run) and starts the next one. 1 until the first restart.
    run = models.PositiveIntegerField(default=1)
    # When the current run began: created_at for the first.
    run_started_at = models.DateTimeField(null=True, blank=True)
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
            # The retention sweep walks each tenant's finished instances oldest first. Its
            # condition names finished_at only, which changes once, at the end: the
            # updates of every step stay HOT.
            models.Index(
                fields=["tenant", "finished_at"],
                condition=models.Q(finished_at__isnull=False),
                name="instance_retention",
            ),
            # A tenant's held leases (the claim counts them under the cap; the clock finds
            # lapsed ones) and the instances sent to workers (fill counts them): a few
            # rows each, however many instances sleep or have finished. Without them
            # every claim and fill read all of the tenant's instances (bench/scale.py).
            # The leases' index does not hold their expiry, which every kept step's record
            # renews: that update stays HOT (records.lease_columns); the few held rows of
            # a tenant are filtered on it.
            models.Index(
                fields=["tenant"],
                condition=~models.Q(lease_owner=""),
                name="instance_leased",
            ),
            models.Index(
                fields=["tenant", "dispatched_at"],
                condition=models.Q(dispatched_at__isnull=False),
                name="instance_sent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} #{self.key}"

    @property
    def current_run_started_at(self):
        return self.run_started_at or self.created_at

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

    # one_step_per_index and step_waiting_on begin with these: no index of their own.
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="steps", db_index=False
    )
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
        Instance,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="waiting_steps",
        db_index=False,
    )
    config = models.JSONField(default=dict, blank=True)
    # What the replay compares besides name and kind (a sleep's duration or time, an
    # event type, a child's workflow and id); null for do steps and older records.
    shape = models.JSONField(null=True, blank=True)
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
            "shape": self.shape,
        }


class Run(models.Model):
    """An earlier run of an instance, archived whole when a restart began the next one.

    The current run lives on the Instance and its Step rows, so that what every
    activation reads stays one instance's few rows; an earlier run is read only by the
    history and runs endpoints, so its steps are kept here as one JSON list (each as
    the history format has it: execution.history).
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    version = models.ForeignKey(CodeVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Instance.Status.choices)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    steps = models.JSONField(default=list, blank=True)
    # The step the run after this one restarted from (its steps before it were kept).
    next_from_step = models.PositiveIntegerField(default=0)
    # The step this run restarted from; null for an instance's first run.
    restarted_from_step = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()

    class Meta:
        ordering = ["instance", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "number"], name="one_run_per_number")
        ]

    def __str__(self) -> str:
        return f"{self.instance} run {self.number}"


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

    # one_event_per_seq begins with it: no index of its own.
    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="progress", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["instance", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "seq"], name="one_event_per_seq")
        ]


class Schedule(models.Model):
    """A workflow the clock starts on a cron expression, or every so many seconds.

    `next_fire_at` is the next fire the clock owes (null while paused); a clock takes
    a fire by moving it on with a conditional UPDATE (execution.schedules.fire), so two
    clocks never start the same fire.
    """

    class Overlap(models.TextChoices):
        SKIP = "skip"  # no new instance while the previous one has not ended
        ALLOW = "allow"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="schedules")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    cron = models.CharField(max_length=200, blank=True, default="")
    every = models.PositiveBigIntegerField(null=True, blank=True)  # seconds
    time_zone = models.CharField(max_length=64, default="UTC")  # "timezone" in the API
    payload = models.JSONField(default=dict, blank=True)
    overlap = models.CharField(max_length=10, choices=Overlap.choices, default=Overlap.SKIP)
    paused = models.BooleanField(default=False)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fire_at = models.DateTimeField(null=True, blank=True)
    # What overlap "skip" asks about: the instance the last started fire made.
    last_instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="schedule_name_per_tenant")
        ]
        indexes = [
            # The clock's question each sweep: which fires are due?
            models.Index(
                fields=["next_fire_at"], condition=models.Q(paused=False), name="schedule_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class SkipReason(models.TextChoices):
    """Why a start the platform makes (a schedule's fire, a tenant event's) started nothing."""

    OVERLAP = "overlap"  # overlap "skip" and the schedule's previous instance has not ended
    QUOTA = "quota"
    NOT_APPROVED = "not_approved"  # the workflow has no approved current version
    SUSPENDED = "suspended"
    ID_TAKEN = "id_taken"  # another workflow's instance has the id


class ScheduleFire(models.Model):
    """One fire of a schedule: the instance it started, or why it started none."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    fire_at = models.DateTimeField()
    # The key, not a foreign key: the fire's record outlives the instance's retention.
    instance_key = models.CharField(max_length=MAX_KEY_LENGTH, blank=True, default="")
    skipped = models.CharField(max_length=20, blank=True, default="", choices=SkipReason.choices)
    detail = models.TextField(blank=True, default="")
    # Earlier fires that fell while no clock ran, given up for this one.
    missed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-fire_at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "fire_at"], name="one_fire_per_time")
        ]


class Trigger(models.Model):
    """Tenant-wide events of `event_type` start `workflow`."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="triggers")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="triggers")
    event_type = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["event_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "event_type"], name="trigger_type_per_workflow"
            )
        ]
        indexes = [models.Index(fields=["tenant", "event_type"], name="trigger_lookup")]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.workflow}"


class TenantEvent(models.Model):
    """A tenant-wide event and what it started, kept so the same id answers the same."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tenant_events")
    key = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    started = models.JSONField(default=list, blank=True)  # instance ids
    skipped = models.JSONField(default=list, blank=True)  # [{"workflow", "reason", "detail"}]
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="tenant_event_key")]
        # The events-per-minute quota counts a tenant's recent ones.
        indexes = [models.Index(fields=["tenant", "created_at"], name="tenant_event_recent")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.key} {self.type}"
