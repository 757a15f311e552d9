from celery import shared_task
from celery.signals import worker_process_init
from django.db import close_old_connections

from execution import engine
from execution.sandbox import prepare


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
