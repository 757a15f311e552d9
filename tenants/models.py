"""Tenants, their people, their API tokens and their limits."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Tenant(models.Model):
    class ReviewPolicy(models.TextChoices):
        AUTOMATIC = "automatic", "Run new versions after the automatic checks"
        MANUAL = "manual", "Hold new versions for staff review"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    review_policy = models.CharField(
        max_length=20, choices=ReviewPolicy.choices, default=ReviewPolicy.AUTOMATIC
    )
    suspended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def quota(self) -> Quota:
        """The tenant's quota, made with the plan defaults if it has none yet.

        Read once per Tenant object (Django keeps the reverse one-to-one), so code that
        consults several limits in one activation or request pays one query.
        """
        try:
            return self.quota_row
        except Quota.DoesNotExist:
            quota, _ = Quota.objects.get_or_create(tenant=self)
            return quota


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        DEVELOPER = "developer"
        VIEWER = "viewer"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.DEVELOPER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.DEVELOPER)


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token is shown once, at creation."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class Quota(models.Model):
    """Per-tenant limits. The defaults are the plan every new tenant starts on."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota_row")
    step_memory_mb = models.PositiveIntegerField(default=256)
    step_cpu_seconds = models.PositiveIntegerField(default=30)
    step_timeout_seconds = models.PositiveIntegerField(default=60)
    step_pids = models.PositiveIntegerField(default=64)
    step_output_bytes = models.PositiveIntegerField(default=1024 * 1024)
    step_result_bytes = models.PositiveIntegerField(default=256 * 1024)
    payload_bytes = models.PositiveIntegerField(default=256 * 1024)
    concurrent_activations = models.PositiveIntegerField(default=8)
    running_instances = models.PositiveIntegerField(default=1000)
    steps_per_instance = models.PositiveIntegerField(default=1000)
    instance_starts_per_minute = models.PositiveIntegerField(default=600)
    events_per_minute = models.PositiveIntegerField(default=1200)
    # The JSON size of an instance's recorded results, errors and logs: every activation
    # loads its history, so an endless one would cost more with every step.
    history_bytes = models.PositiveBigIntegerField(default=32 * 2**20)
    network = models.BooleanField(default=False)

    class SandboxMode(models.TextChoices):
        FRESH = "fresh", "A fresh jail per step"
        WARM = "warm", "A warm jail per code version, a fresh process per step"

    sandbox_mode = models.CharField(
        max_length=10, choices=SandboxMode.choices, default=SandboxMode.WARM
    )

    def __str__(self) -> str:
        return f"quota of {self.tenant}"


class QuotaUsage(models.Model):
    """What a tenant may still start or send before its counted quotas need counting again.

    The truth is the rows (unfinished instances, instances created and events sent in
    the last 60 s); counting them on every start costs a scan. Instead, a count (see
    execution.quotas) finds the room left under each limit and shares it out as
    allowances over SHARDS rows per tenant, and each start or event takes one unit
    from its row's allowance, in the transaction that makes its row. What was admitted
    since the count is at most what was shared out, so the limit holds exactly; when a
    row runs dry the rows are counted again. Several rows let concurrent starts of one
    tenant commit without waiting on each other. Kept apart from Quota so that saving a
    Quota (the admin) never writes an allowance back.
    """

    SHARDS = 8

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage")
    shard = models.PositiveSmallIntegerField()
    running_left = models.IntegerField(default=0)
    starts_left = models.IntegerField(default=0)
    events_left = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "shard"], name="one_usage_row_per_shard")
        ]

    def __str__(self) -> str:
        return f"quota usage of tenant {self.tenant_id}, shard {self.shard}"


class AuditLog(models.Model):
    """Who did what, when and why: moderation, tokens, quotas, suspensions, terminations."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_log"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True, default="")
    target_id = models.CharField(max_length=100, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target_type} {self.target_id}"


class SecretQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant | int) -> SecretQuerySet:
        return self.filter(tenant=tenant)


class Secret(models.Model):
    """A tenant's named credential for its workflow code (API.md, Secrets).

    Only the Fernet token of the value is stored (tenants.secrets encrypts and decrypts);
    the value is never shown again, in the API, the console or the admin.
    """

    NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,63}$"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)
    ciphertext = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="one_secret_per_name")
        ]

    def __str__(self) -> str:
        return f"secret {self.name} of {self.tenant_id}"
