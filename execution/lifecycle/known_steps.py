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
from datetime import datetime

from execution.models import Instance, Step

KEPT_INSTANCES = 4

# instance id -> ((its run, created_at), its first resolved steps, oldest first)
_known: OrderedDict[int, tuple[tuple[int, datetime], list[Step]]] = OrderedDict()
_lock = threading.Lock()  # a threaded pool claims from several threads


def run_of(instance: Instance) -> tuple[int, datetime]:
    """What names one run of one instance (an id alone could in principle be reused)."""
    return instance.run, instance.created_at


def known(instance: Instance) -> list[Step]:
    """The steps of the instance's current run this process knows are final, from index
    0 on, contiguous; empty if it knows none. The claim reads the rows after them."""
    with _lock:
        entry = _known.get(instance.pk)
        if entry is None or entry[0] != run_of(instance):
            return []
        _known.move_to_end(instance.pk)
        return entry[1]


def remember(instance: Instance, steps: list[Step]) -> None:
    """Keep the claimed instance's steps that will not change in its current run: every
    one before the last, up to the first that is not resolved. The last step is left
    out: the activation settles, marks or retries it."""
    final = []
    for step in steps[:-1]:
        if step.status not in Step.RESOLVED_STATUSES:
            break
        final.append(step)
    with _lock:
        if not final:
            _known.pop(instance.pk, None)
            return
        _known[instance.pk] = (run_of(instance), final)
        _known.move_to_end(instance.pk)
        while len(_known) > KEPT_INSTANCES:
            _known.popitem(last=False)


def forget_all() -> None:
    """Drop everything kept (tests)."""
    with _lock:
        _known.clear()
