import importlib

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the engine's Celery task in every process, so that dispatch sends it
        # by name (it must not import the engine it sits under).
        importlib.import_module("execution.tasks")
