"""The steps a worker process read at its last claims of an instance, so that its next
claim reads only the rows after them (lifecycle.leases).

A claim used to read all of an instance's steps: at step 2,000 of a long run that was
2,000 rows turned into model instances (300 ms on a loaded 2-core machine, bench/
long_runs.py) at every claim, and a kept instance is claimed again every
STEPWELL_INLINE_SECONDS. A step that is resolved and is not the last is never written
again in the same run (only the last step is settled, marked running or retried;
invariant 2 keeps indexes contiguous; a restart begins a new run, and the steps it
discards go with it), so those rows are kept here and only the later ones are read.

Kept per process for a few instances, the ones this worker ran last: at most what
their activations hold anyway (each history within its quota).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from execution.models import Instance, Step

KEPT_INSTANCES = 4


@dataclass
class Known:
    run: tuple[int, datetime]  # run_of(instance)
    steps: list[Step]  # its first steps, final in the run, oldest first
    # Their Step.as_history(), each made once: the history an activation replays from.
    history: list[dict] = field(default_factory=list)


_known: OrderedDict[int, Known] = OrderedDict()
_lock = threading.Lock()  # a threaded pool claims from several threads


def run_of(instance: Instance) -> tuple[int, datetime]:
    """What names one run of one instance (an id alone could in principle be reused)."""
    return instance.run, instance.created_at


def _entry(instance: Instance) -> Known | None:
    entry = _known.get(instance.pk)
    if entry is None or entry.run != run_of(instance):
        return None
    _known.move_to_end(instance.pk)
    return entry


def known(instance: Instance) -> list[Step]:
    """The steps of the instance's current run this process knows are final, from index
    0 on, contiguous; empty if it knows none. The claim reads the rows after them."""
    with _lock:
        entry = _entry(instance)
        return entry.steps if entry is not None else []


def remember(instance: Instance, steps: list[Step]) -> None:
    """Keep the claimed instance's steps that will not change in its current run: every
    one before the last, up to the first that is not resolved. The last step is left
    out: the activation settles, marks or retries it. `steps` begins with those known
    (the claim read the rows after them), so only the new ones are looked at."""
    with _lock:
        entry = _entry(instance)
        if entry is None or not steps or steps[0] is not entry.steps[0]:
            entry = Known(run_of(instance), [])
        for step in steps[len(entry.steps) : -1]:
            if step.status not in Step.RESOLVED_STATUSES:
                break
            entry.steps.append(step)  # the claim copied the list it had from known()
        if not entry.steps:
            _known.pop(instance.pk, None)
            return
        _known[instance.pk] = entry
        _known.move_to_end(instance.pk)
        while len(_known) > KEPT_INSTANCES:
            _known.popitem(last=False)


def history_of(instance: Instance, steps: list[Step]) -> list[dict]:
    """[s.as_history() for s in steps], with the entries of the steps this process
    knows made once, not at every claim: what an activation's input["history"] holds.
    `steps` are the claimed ones (the known, then the rows read after them)."""
    with _lock:
        entry = _entry(instance)
        if entry is None or not steps or steps[0] is not entry.steps[0]:
            return [s.as_history() for s in steps]
        for step in entry.steps[len(entry.history) :]:
            entry.history.append(step.as_history())
        reused = min(len(entry.history), len(steps))
        return [*entry.history[:reused], *(s.as_history() for s in steps[reused:])]


def forget_all() -> None:
    """Drop everything kept (tests)."""
    with _lock:
        _known.clear()
