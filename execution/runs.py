"""Running an instance again: a restart (a new run of the same instance, from a step, on
the same or another approved version) and a rerun (a new instance of the same workflow).

The web process runs no tenant code: a restart only archives the current run, keeps the
steps before `from_step` and makes the instance due. The worker that claims it replays
the kept steps on the chosen version, and a version that does not call them the same
way errors the new run with the non-determinism error (stepwell.replay), while the
archived run stays as it was.
"""

from __future__ import annotations

from django.db import transaction

from execution import history, quotas, workflows
from execution.errors import RestartRefused, StateConflict
from execution.kinds import history_size
from execution.lifecycle import states
from execution.lifecycle.states import hold_of
from execution.models import CodeVersion, Instance, Step
from tenants.audit import audit

# Each restart keeps its run's steps: a bound on how many, so that restarting in a loop
# cannot grow one instance's archive without end. A rerun starts afresh.
MAX_RUNS = 100


def restart_version(instance: Instance, version_sha: str | None) -> CodeVersion:
    """The version the next run runs on: the instance's own, or an approved version of its
    workflow (RestartRefused if the workflow has none with that sha256, StateConflict if
    it is not approved)."""
    if not version_sha:
        return instance.version
    version = instance.workflow.versions.filter(sha256=version_sha).first()
    if version is None:
        raise RestartRefused(
            "version", f"workflow {instance.workflow.name!r} has no version {version_sha}"
        )
    if not version.may_run:
        raise StateConflict(f"the instance cannot run on it: {version.refusal()}")
    return version


def check_from_step(steps: list[Step], from_step: int) -> None:
    """Every step kept must have its result: a replay returns it without running it."""
    if from_step > len(steps):
        raise RestartRefused(
            "from_step", f"from_step is {from_step}; the run has {len(steps)} steps"
        )
    for step in steps[:from_step]:
        if step.status not in Step.RESOLVED_STATUSES:
            raise RestartRefused(
                "from_step",
                f"step {step.index} ({step.name!r}) is {step.status} and has no result to "
                f"keep: restart from step {step.index} or before",
            )


@transaction.atomic
def restart(
    instance: Instance,
    *,
    from_step: int = 0,
    version_sha: str | None = None,
    actor: dict | None = None,
) -> Instance:
    """Begin the instance's next run: steps before `from_step` keep their results, the
    others are discarded (kept in the archived run) and run again, on `version_sha` if
    given. Events that discarded steps consumed can be consumed again.

    Refused (409) while a staff decision keeps the instance or that version from running.
    A finished instance that runs again needs room under the running instances quota
    (raises QuotaExceeded); it is checked with the instance locked, so it was finished.
    `actor`: who asked, as tenants.audit.request_actor gives it.
    """
    instance = Instance.objects.select_for_update(of=("self",)).get(pk=instance.pk)
    if instance.run >= MAX_RUNS:
        raise quotas.QuotaExceeded(
            f"the instance has had {instance.run} runs, the limit: rerun it as a new instance"
        )
    version = restart_version(instance, version_sha)
    found = hold_of(instance, version.pk)
    if found is not None:
        raise StateConflict(f"the instance cannot run again: {found.message}")
    steps = list(instance.steps.order_by("index"))
    check_from_step(steps, from_step)
    if instance.is_terminal:
        quotas.check_running(instance.tenant)
    history.archive(instance, steps, from_step)
    # Deleting them releases the events they consumed (Event.consumed_by is SET_NULL).
    instance.steps.filter(index__gte=from_step).delete()
    kept = sum(history_size(s) for s in steps[:from_step])
    states.restart(instance, version=version, history_bytes=kept)
    if actor is not None:
        audit(
            "instance.restarted",
            tenant=instance.tenant,
            target=instance,
            **actor,
            instance=instance.key,
            run=instance.run,
            from_step=from_step,
            version=version.sha256,
        )
    return instance


def rerun(
    instance: Instance,
    *,
    key: str | None = None,
    payload: dict | None = None,
    version_sha: str | None = None,
    actor: dict | None = None,
) -> tuple[Instance, bool]:
    """Start a new instance of the instance's workflow, with its payload unless another is
    given, through the ordinary start (quotas, versions held for review): returns
    (instance, created) as workflows.start_instance does."""
    started, created = workflows.start_instance(
        instance.workflow,
        payload=instance.payload if payload is None else payload,
        key=key,
        version_sha=version_sha,
        rate=True,
    )
    if created and actor is not None:
        audit(
            "instance.rerun",
            tenant=instance.tenant,
            target=started,
            **actor,
            instance=started.key,
            rerun_of=instance.key,
        )
    return started, created
