"""An instance's runs as the history format gives them (docs/history.md): everything a
replay elsewhere needs, `stepwell replay` included. The format is `stepwell.history/1`;
fields may be added to it, none changed or removed without a new format name.

The current run is read from the instance and its step rows; an earlier run from its
Run row, whose steps were stored in this same JSON when a restart archived it.
"""

from __future__ import annotations

from django.utils import timezone

from execution.models import Instance, Run, Step
from execution.schemas import HistoryOut, HistoryStepOut, step_out

FORMAT = "stepwell.history/1"


def step_json(step: Step) -> dict:
    """The step as the API shows it, plus its shape, as plain JSON (it is stored as is)."""
    data = {**step_out(step), "shape": step.shape or {}}
    return HistoryStepOut.model_validate(data).model_dump(mode="json")


def previous_run(instance: Instance) -> Run | None:
    if instance.run <= 1:
        return None
    return Run.objects.filter(instance=instance, number=instance.run - 1).first()


def current_from_step(instance: Instance) -> int | None:
    """The step the current run restarted from; None for a first run."""
    before = previous_run(instance)
    return None if before is None else before.next_from_step


def base(instance: Instance) -> dict:
    return {
        "format": FORMAT,
        "workflow": instance.workflow.name,
        "instance": instance.key,
        # Exactly what the runtime gives the code as event.timestamp.
        "created_at": instance.created_at.isoformat(),
        "payload": instance.payload,
    }


def current_history(instance: Instance) -> dict:
    steps = instance.steps.order_by("index")
    return {
        **base(instance),
        "run": instance.run,
        "started_at": instance.current_run_started_at,
        "ended_at": instance.finished_at,
        "restarted_from_step": current_from_step(instance),
        "version": {"sha256": instance.version.sha256, "code": instance.version.code},
        "status": instance.status,
        "output": instance.output,
        "error": instance.error,
        "steps": [step_json(s) for s in steps],
    }


def archived_history(instance: Instance, run: Run) -> dict:
    return {
        **base(instance),
        "run": run.number,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "restarted_from_step": run.restarted_from_step,
        "version": {"sha256": run.version.sha256, "code": run.version.code},
        "status": run.status,
        "output": run.output,
        "error": run.error,
        "steps": run.steps,
    }


def history_of(instance: Instance, number: int | None = None) -> dict | None:
    """Run `number` (the current run when None) of the instance, as plain JSON; None if
    it has no such run."""
    if number is None or number == instance.run:
        data = current_history(instance)
    else:
        run = Run.objects.select_related("version").filter(instance=instance, number=number)
        found = run.first()
        if found is None:
            return None
        data = archived_history(instance, found)
    return HistoryOut.model_validate(data).model_dump(mode="json")


def archive(instance: Instance, steps: list[Step], next_from_step: int) -> Run:
    """Store the current run of the locked instance, all its steps included, before a
    restart begins the next one from step `next_from_step`."""
    now = timezone.now()
    return Run.objects.create(
        instance=instance,
        number=instance.run,
        version_id=instance.version_id,
        status=instance.status,
        output=instance.output,
        error=instance.error,
        steps=[step_json(s) for s in steps],
        next_from_step=next_from_step,
        restarted_from_step=current_from_step(instance),
        started_at=instance.current_run_started_at,
        ended_at=instance.finished_at or now,
    )


def run_row(run: Run | Instance) -> dict:
    if isinstance(run, Instance):
        return {
            "run": run.run,
            "started_at": run.current_run_started_at,
            "ended_at": run.finished_at,
            "status": run.status,
            "version": run.version.sha256,
            "restarted_from_step": current_from_step(run),
        }
    return {
        "run": run.number,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "status": run.status,
        "version": run.version.sha256,
        "restarted_from_step": run.restarted_from_step,
    }


def runs_page(instance: Instance, *, before: int | None, limit: int) -> dict:
    """A page of the instance's runs, newest first, numbered below `before` if given."""
    rows: list[Run | Instance] = []
    if before is None or instance.run < before:
        rows.append(instance)
    earlier = (
        Run.objects.filter(instance=instance)
        .select_related("version")
        .defer("steps", "output", "error", "version__code")
    )
    if before is not None:
        earlier = earlier.filter(number__lt=before)
    rows += earlier.order_by("-number")[: limit + 1 - len(rows)]
    page = [run_row(r) for r in rows[:limit]]
    return {
        "items": page,
        "next_cursor": str(page[-1]["run"]) if len(rows) > limit else None,
    }
