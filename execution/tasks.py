from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown
from django.db import close_old_connections

from execution import engine
from execution.sandbox import prepare
from lib import metrics


@shared_task(name="stepwell.advance", ignore_result=True)
def advance(instance_pk: int) -> None:
    """Run the instance's next activations; quietly nothing if it is gone or taken."""
    # As Django does around a request: the connection goes back to the pool after the
    # task, and one that broke (a PostgreSQL restart) is replaced before the next.
    close_old_connections()
    try:
        engine.advance(instance_pk)
    finally:
        close_old_connections()


@worker_process_init.connect
def _prepare_sandbox(**kwargs) -> None:
    prepare()


@worker_process_shutdown.connect
def _forget_live_metrics(pid=None, **kwargs) -> None:
    # The library's bookkeeping for a pool process that exits: its live gauges (warm
    # jails) stop counting; /metrics also drops those of processes killed outright.
    metrics.process_ended(pid)
