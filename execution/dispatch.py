"""Sending an instance to a worker: a Celery message that names the engine's task.

The lowest layer of the engine (see execution.lifecycle): it sends by the task's name,
so that the modules the task runs need not be imported here. A message only makes
things happen sooner; the database is the record (execution.lifecycle.due).
"""

from __future__ import annotations

import logging

from celery import current_app

log = logging.getLogger(__name__)

# execution.tasks.advance; execution.apps registers it when Django starts.
ADVANCE = "stepwell.advance"


def enqueue(instance_pk: int) -> None:
    try:
        current_app.tasks[ADVANCE].apply_async(args=[instance_pk])
        log.debug("sent instance %s to a worker", instance_pk)
    except Exception:
        # The broker is down: the clock sends it again once the redispatch delay passes.
        log.warning(
            "could not enqueue instance %s; the clock will retry", instance_pk, exc_info=True
        )
