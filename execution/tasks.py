import logging
import subprocess

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import close_old_connections

from execution import engine

log = logging.getLogger(__name__)


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
    from execution.sandbox import prepare

    prepare()
    compile_runtime()


def compile_runtime() -> None:
    """Byte-compile the sandbox runtime for the sandbox interpreter.

    The jail mounts the runtime read-only and runs with -B, so without these files
    every step would compile the runtime from source again (about 6 ms).
    """
    from execution.sandbox.config import SandboxConfig

    config = SandboxConfig.from_settings()
    result = subprocess.run(
        [settings.STEPWELL_SANDBOX_PYTHON, "-m", "compileall", "-q", str(config.runtime_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        log.warning("could not byte-compile the sandbox runtime: %s", result.stderr[-2000:])
