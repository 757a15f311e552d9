"""Celery's hard time limit: a backstop above the longest task an activation can make."""

from console.celery import app
from execution.sandbox.warm_step import ZYGOTE_GRACE_SECONDS
from execution.step_limits import STEP_TIMEOUT_MARGIN_SECONDS, limits_for
from execution.tasks import advance
from tenants.models import Quota


def test_no_quota_makes_a_step_longer_than_the_maximum(settings):
    settings.STEPWELL_MAX_STEP_TIMEOUT_SECONDS = 600
    limits = limits_for(Quota(step_timeout_seconds=10**9), timeout_seconds=10**9)
    assert limits.wall_seconds == 600 + STEP_TIMEOUT_MARGIN_SECONDS


def test_the_hard_time_limit_is_above_two_of_the_longest_steps_and_the_inline_budget(settings):
    longest_step = limits_for(Quota(step_timeout_seconds=10**9)).wall_seconds
    assert longest_step == settings.STEPWELL_MAX_STEP_TIMEOUT_SECONDS + STEP_TIMEOUT_MARGIN_SECONDS
    # A task runs at most one activation started in its inline budget and one after it.
    longest_task = settings.STEPWELL_INLINE_SECONDS + 2 * (longest_step + ZYGOTE_GRACE_SECONDS)
    assert longest_task < settings.CELERY_TASK_TIME_LIMIT
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT
    # What the sender writes into each message, and so what the worker enforces.
    assert advance.time_limit == settings.CELERY_TASK_TIME_LIMIT
