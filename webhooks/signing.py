"""The Standard Webhooks headers of one attempt (the `standardwebhooks` package signs)."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks import Webhook as Signer


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """`webhook-id` (the same on every attempt), `webhook-timestamp` (this attempt's) and
    `webhook-signature` over both and the body, keyed with the `whsec_` secret."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(message_id, at, body),
    }
