from datetime import datetime

from celery import shared_task
from django.db import close_old_connections

from webhooks import deliveries


@shared_task(name="stepwell.deliver_webhook", ignore_result=True)
def deliver(delivery_id: int, lease: str) -> None:
    """One attempt of a delivery the sweep claimed; quietly nothing if it is gone or taken.
    Routed to the webhooks queue (settings), whose workers run no steps."""
    close_old_connections()
    try:
        deliveries.attempt(delivery_id, datetime.fromisoformat(lease))
    finally:
        close_old_connections()
