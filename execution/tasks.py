from celery import shared_task
from celery.signals import worker_process_init

from execution import engine


@shared_task(name="stepwell.advance", ignore_result=True)
def advance(instance_pk: int) -> None:
    """Run one activation of an instance; quietly nothing if it is gone or taken."""
    engine.advance(instance_pk)


@worker_process_init.connect
def _prepare_sandbox(**kwargs) -> None:
    from execution.sandbox import prepare

    prepare()
