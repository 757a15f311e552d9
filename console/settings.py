"""Stepwell settings, read from the environment (see API.md, "Set-up commands")."""

import math
import os
from pathlib import Path

from execution.sandbox.ranges import unreachable_because
from lib.env import (
    ConfigError,
    database_from_url,
    env_bool,
    env_choice,
    env_fernet_keys,
    env_float,
    env_int,
    env_ip_list,
    env_list,
    env_str,
    new_fernet_key,
    var_dir,
)
from lib.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = var_dir(BASE_DIR)

DEBUG = env_bool("DEBUG", False)

# A scraper that is not on loopback, or comes through a proxy, must send this as a
# bearer token (API.md, "Health"); empty: loopback only.
STEPWELL_METRICS_TOKEN = env_str("STEPWELL_METRICS_TOKEN", "")
# The tenants with the most unfinished instances get a label of their own on /metrics;
# the rest are summed as "other", so the series stay bounded however many tenants exist.
STEPWELL_METRICS_TOP_TENANTS = env_int("STEPWELL_METRICS_TOP_TENANTS", 20, minimum=1)


def _secret_key() -> str:
    key = env_str("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ConfigError("SECRET_KEY must be set when DEBUG is off")
    # Local development only: a key made once per checkout, never committed.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        import secrets

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()


def _secret_keys() -> list[str]:
    """The Fernet keys tenants' secrets are encrypted with (API.md, Secrets): the first
    encrypts, all decrypt. Unset with DEBUG off, secrets cannot be set (the API says so)
    rather than start-up failing for deployments that use none."""
    keys = env_fernet_keys("STEPWELL_SECRET_KEYS")
    if keys or not DEBUG:
        return keys
    # Local development only, as SECRET_KEY: one key made per var dir, never committed.
    path = VAR_DIR / "secret_keys"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_fernet_key())
    return [path.read_text().strip()]


STEPWELL_SECRET_KEYS = _secret_keys()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    # Before the admin: its admin/base_site.html gives the staff side Stepwell's look.
    "console",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "tenants",
    "execution",
    "webhooks",
]

MIDDLEWARE = [
    # Outermost, so that it sees the 500 that Django makes of a failure in any other.
    "console.api_answers.JSONErrorsUnderAPI",
    "lib.logs.RequestIdsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files with DEBUG off too: hashed names and compressed copies made by
    # collectstatic, served with a year's cache (the names change with the content).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Counts and times every request but static files, by route template (lib/metrics).
    "console.metrics.RequestMetrics",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if not os.environ.get("DATABASE_URL"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'stepwell.sqlite3'}"), BASE_DIR
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

# Each WebSocket consumer waits on its channel with a BZPOPMIN that blocks for 5 s
# (channels_redis's brpop_timeout), and redis-py's default socket timeout is also 5 s:
# the read lost that race, the consumer died of the TimeoutError, and uvicorn dropped
# every idle connection after about 5 s with no close frame. The read must outlast
# the blocking command, with room for a busy Redis.
CHANNELS_REDIS_SOCKET_TIMEOUT = env_float("STEPWELL_CHANNELS_SOCKET_TIMEOUT", 20.0, minimum=10.0)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNELS_REDIS_SOCKET_TIMEOUT}],
            "prefix": env_str("STEPWELL_CHANNELS_PREFIX", "stepwell"),
        },
    }
}

# Celery: JSON only. Messages are acked when a worker takes them: the database lease
# and the clock, not the broker, bring back the work of a worker that died (in seconds,
# where Redis would redeliver after its visibility timeout). With late acks, kombu's
# restore of unacked messages after a Redis restart crashed the worker (kombu 5.7.0).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = False
# A step in flight finishes and records itself even while the broker is away.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup otherwise closes every connection before and after each task,
# and in a prefork worker with a pool the whole pool too: a new PostgreSQL connection
# (about 5 ms) per task. The task hands its connection back to the pool itself
# (execution/tasks.py), which also drops one that broke.
CELERY_DB_REUSE_MAX = 10_000
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Without ack emulation kombu keeps no "unacked" hash in Redis, so it has nothing to
# restore when the connection drops (its restore after a Redis restart crashed the
# worker, kombu 5.7.0). A message a dying worker took but never ran is sent again by
# the clock after STEPWELL_REDISPATCH_SECONDS.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "ack_emulation": False}
# kombu's Redis transport with one redis client per channel instead of one per publish
# (console/broker.py); an explicit transport wins over the URL's scheme in kombu.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "console.broker:Transport"
CELERY_TASK_ALWAYS_EAGER = env_bool("STEPWELL_CELERY_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = env_str("STEPWELL_QUEUE", "stepwell")
# Webhook deliveries have a queue of their own (the Procfile's `webhooks`), so that a
# slow receiver never holds a worker that runs steps.
STEPWELL_WEBHOOK_QUEUE = env_str("STEPWELL_WEBHOOK_QUEUE", "webhooks")
CELERY_TASK_ROUTES = {"stepwell.deliver_webhook": {"queue": STEPWELL_WEBHOOK_QUEUE}}

# The test suite makes a few thousand users, and a deliberately slow password hash was
# most of its time. scripts/test.sh sets this for the tests and every process they
# start (a browser test signs in through a real web process); nothing else should.
if env_bool("STEPWELL_TEST_FAST_PASSWORD_HASHING", False):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Pages name files by their hashed names, read from the manifest collectstatic
    # writes; with DEBUG on, the plain names, served from static/ as they are edited.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# LOG_FORMAT=json: one JSON object per line, from web, worker and clock alike, with the
# tenant, instance, step and activation ids of the work at hand (lib.logs).
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = logging_config(LOG_FORMAT, env_str("LOG_LEVEL", "INFO"))

# The audit log keeps entries this long; the clock deletes older ones (tenants.audit).
STEPWELL_AUDIT_RETENTION_DAYS = env_int("STEPWELL_AUDIT_RETENTION_DAYS", 365, minimum=1)

# The engine and the sandbox.
STEPWELL_SANDBOX_PYTHON = env_str("STEPWELL_SANDBOX_PYTHON", "/usr/bin/python3")
STEPWELL_SANDBOX_UID = env_int("STEPWELL_SANDBOX_UID", 99000, minimum=1000)
STEPWELL_SANDBOX_SLOTS = env_int("STEPWELL_SANDBOX_SLOTS", 64, minimum=1)
STEPWELL_CGROUP_ROOT = env_str("STEPWELL_CGROUP_ROOT", "/sys/fs/cgroup")
# Code cache, slot locks and the runtime copy; empty: VAR_DIR/sandbox, or
# /var/lib/stepwell/sandbox when the sandbox uids cannot reach VAR_DIR (a private home).
STEPWELL_SANDBOX_DIR = env_str("STEPWELL_SANDBOX_DIR", "")
# The resolvers network-on jails use; empty: the host's /etc/resolv.conf (see
# docs/sandbox-network.md: jails cannot reach resolvers on loopback or in private ranges).
STEPWELL_SANDBOX_NAMESERVERS = env_ip_list("STEPWELL_SANDBOX_NAMESERVERS", unreachable_because)
# A step waits this long for a free slot, then fails as a sandbox failure.
STEPWELL_SANDBOX_SLOT_WAIT_SECONDS = env_float(
    "STEPWELL_SANDBOX_SLOT_WAIT_SECONDS", 60.0, minimum=0.1
)
# Warm sandbox mode: the warm jails one worker process keeps (least recently used goes
# first), how long an idle one lives, and how many the whole machine may hold (each holds
# a slot; the rest stay for fresh jails). A jail is replaced after so many seconds or
# steps, whatever its use.
STEPWELL_WARM_JAILS_PER_WORKER = env_int("STEPWELL_WARM_JAILS_PER_WORKER", 4, minimum=1)
STEPWELL_WARM_IDLE_SECONDS = env_float("STEPWELL_WARM_IDLE_SECONDS", 300.0, minimum=1.0)
STEPWELL_WARM_JAILS_PER_MACHINE = env_int(
    "STEPWELL_WARM_JAILS_PER_MACHINE", max(1, STEPWELL_SANDBOX_SLOTS // 2), minimum=1
)
if STEPWELL_WARM_JAILS_PER_MACHINE > STEPWELL_SANDBOX_SLOTS:
    raise ConfigError(
        f"STEPWELL_WARM_JAILS_PER_MACHINE={STEPWELL_WARM_JAILS_PER_MACHINE} is above "
        f"STEPWELL_SANDBOX_SLOTS={STEPWELL_SANDBOX_SLOTS}: each warm jail holds a slot"
    )
STEPWELL_WARM_MAX_JAIL_SECONDS = env_float("STEPWELL_WARM_MAX_JAIL_SECONDS", 600.0, minimum=1.0)
STEPWELL_WARM_MAX_JAIL_STEPS = env_int("STEPWELL_WARM_MAX_JAIL_STEPS", 1000, minimum=1)
# On a miss, run the activation fresh and start its jail on a thread for the next one,
# rather than wait for the start. Off: on a loaded 2-core machine it made the first step
# faster and the next ones slower, no gain overall (bench/README.md, bench/tenants.py).
STEPWELL_WARM_START_IN_BACKGROUND = env_bool("STEPWELL_WARM_START_IN_BACKGROUND", False)
# Launch a jail ahead, up to the tenant's import, for the next warm miss of each worker
# process (execution/sandbox/warm_spare.py). On: with more tenants than warm jails, a
# miss binds the spare (16-18 ms) instead of waiting for a start (42-43 ms), and the
# many-tenant per-step overhead was lower with it in every pair (bench/tenants.py:
# 2.19-2.40x all-warm against 2.95-3.06x off in session 8, 2.09-2.27x against 2.32x in
# session 9). Costs one warm slot and some 5.5 MiB per worker process while it waits,
# at most the warm idle time.
STEPWELL_WARM_SPARE_JAIL = env_bool("STEPWELL_WARM_SPARE_JAIL", True)
# Benchmarks only (bench/peers.py): every activation in this mode, whatever the quota says.
STEPWELL_BENCH_SANDBOX_MODE = env_str("STEPWELL_BENCH_SANDBOX_MODE", "")
# Retention (execution/retention.py): the clock deletes expired finished instances in
# batches of this many, every STEPWELL_RETENTION_INTERVAL seconds, spending at most
# STEPWELL_RETENTION_BUDGET_SECONDS per clock tick while a backlog lasts.
STEPWELL_RETENTION_BATCH = env_int("STEPWELL_RETENTION_BATCH", 1000, minimum=1)
STEPWELL_RETENTION_INTERVAL = env_float("STEPWELL_RETENTION_INTERVAL", 60.0, minimum=0.1)
STEPWELL_RETENTION_BUDGET_SECONDS = env_float(
    "STEPWELL_RETENTION_BUDGET_SECONDS", 0.5, minimum=0.01
)
STEPWELL_LEASE_SECONDS = env_float("STEPWELL_LEASE_SECONDS", 10.0, minimum=1.0)
STEPWELL_CLOCK_INTERVAL = env_float("STEPWELL_CLOCK_INTERVAL", 0.25, minimum=0.05)
# How long a worker may go on with one instance whose next step is ready before it
# hands the instance back to the queue (0 sends every step through the broker).
STEPWELL_INLINE_SECONDS = env_float("STEPWELL_INLINE_SECONDS", 1.0, minimum=0.0)
# A do step is shown as running once it has run this long; shorter ones are recorded
# started and completed at once (one transaction per step instead of two).
STEPWELL_RUNNING_MARK_SECONDS = env_float("STEPWELL_RUNNING_MARK_SECONDS", 0.05, minimum=0.0)
STEPWELL_MAX_CODE_BYTES = env_int("STEPWELL_MAX_CODE_BYTES", 256 * 1024, minimum=1024)
# The largest request body the API reads; over it: 413. Room for a full code upload.
STEPWELL_MAX_BODY_BYTES = env_int(
    "STEPWELL_MAX_BODY_BYTES", 2**20 + STEPWELL_MAX_CODE_BYTES, minimum=STEPWELL_MAX_CODE_BYTES
)
# How many live (unrevoked, unexpired) API tokens a tenant may hold.
STEPWELL_MAX_TOKENS_PER_TENANT = env_int("STEPWELL_MAX_TOKENS_PER_TENANT", 100, minimum=1)
# How many secrets a tenant may hold, and the largest value (API.md, Secrets).
STEPWELL_MAX_SECRETS_PER_TENANT = env_int("STEPWELL_MAX_SECRETS_PER_TENANT", 100, minimum=1)
STEPWELL_MAX_SECRET_BYTES = env_int("STEPWELL_MAX_SECRET_BYTES", 4096, minimum=8)
# How long a dispatched instance may wait for a worker before the clock sends it again.
STEPWELL_REDISPATCH_SECONDS = env_float("STEPWELL_REDISPATCH_SECONDS", 15.0, minimum=0.5)
# The longest a step may run, whatever a quota says (execution.step_limits clamps to it).
STEPWELL_MAX_STEP_TIMEOUT_SECONDS = env_int("STEPWELL_MAX_STEP_TIMEOUT_SECONDS", 3600, minimum=1)
# A backstop, never the way a step ends: Celery kills a task's pool process (SIGKILL) past
# this hard limit and starts another; the instance's lease then lapses and the clock
# sends it again. A task runs activations while STEPWELL_INLINE_SECONDS lasts, so at
# most one started within it and one more after it: two of the longest activations
# (step timeout, the sandbox's margins and grace, the recording) and the budget.
# Only the prefork pool enforces hard limits (the backstop relies on it); the solo and
# thread pools ignore them. Celery writes the limit into each message from the sending
# process's settings, so web, clock and workers must agree on it.
STEPWELL_ACTIVATION_OVERHEAD_SECONDS = 60
CELERY_TASK_TIME_LIMIT = env_int(
    "STEPWELL_TASK_TIME_LIMIT",
    math.ceil(
        STEPWELL_INLINE_SECONDS
        + 2 * (STEPWELL_MAX_STEP_TIMEOUT_SECONDS + STEPWELL_ACTIVATION_OVERHEAD_SECONDS)
    ),
    minimum=1,  # below the default only for tests: a long step then dies with its worker
)

# Webhooks (webhooks/addresses.py): where they may point, and what one attempt may cost.
# Host names and CIDRs; when set, any other host is refused without being resolved.
STEPWELL_WEBHOOK_HOSTS = env_list("STEPWELL_WEBHOOK_HOSTS", [])
STEPWELL_WEBHOOK_ALLOW_PRIVATE = env_bool("STEPWELL_WEBHOOK_ALLOW_PRIVATE", False)
STEPWELL_WEBHOOK_DEADLINE_SECONDS = env_float(
    "STEPWELL_WEBHOOK_DEADLINE_SECONDS", 10.0, minimum=0.1
)
STEPWELL_WEBHOOK_MAX_READ_BYTES = env_int(
    "STEPWELL_WEBHOOK_MAX_READ_BYTES", 64 * 1024, minimum=1024
)
STEPWELL_MAX_WEBHOOKS_PER_TENANT = env_int("STEPWELL_MAX_WEBHOOKS_PER_TENANT", 20, minimum=1)
