import importlib

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The delivery task is sent by name from the clock; every process registers it.
        importlib.import_module("webhooks.tasks")
