import logging
import logging.config
import os

from celery import Celery
from celery.signals import setup_logging
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("stepwell")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def configure_logging(loglevel=None, **kwargs) -> None:
    """Celery's own lines go through Django's LOGGING (LOG_FORMAT=json included) instead
    of the handlers Celery would set up: a receiver of this signal replaces them. The
    worker's --loglevel is Celery's loggers' level (its "ready." line, which scripts wait
    for, is INFO); LOG_LEVEL stays everyone else's."""
    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger("celery").setLevel(loglevel)
