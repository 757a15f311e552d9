"""Webhooks: a tenant's URLs that are told of its instances' status changes, signed per
the Standard Webhooks spec, from an outbox of deliveries written in the transaction of
the change and sent by Celery tasks on the `webhooks` queue, never on step workers.

    models         Webhook (a URL and the events it wants), Delivery (one event for one
                   webhook: its fixed body, attempts and retry time)
    subscriptions  create, list and delete webhooks (the per-tenant count quota)
    addresses      where a webhook may point (SSRF rules), and the address to connect to
    client         one POST with a 10 s deadline in all and a 64 KiB read, no redirects
    deliveries     the outbox (record), attempts, the backoff schedule, the sweep, resend
    tasks          the Celery task that makes one attempt

This app knows instances only by id and key, and takes their JSON from its caller
(execution.lifecycle.notices), so it sits below execution.
"""
