"""Verifying SendGrid's signed event webhook with the official library's EventWebhook.

Kept apart from the email providers: the webhook only needs the verifier.
"""

from __future__ import annotations

import binascii

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

SIGNATURE_HEADER = EventWebhookHeader.SIGNATURE  # X-Twilio-Email-Event-Webhook-Signature
TIMESTAMP_HEADER = EventWebhookHeader.TIMESTAMP  # X-Twilio-Email-Event-Webhook-Timestamp


class WebhookKeyError(ValueError):
    """SENDGRID_WEBHOOK_PUBLIC_KEY is not a usable public key."""


def make_verifier(public_key: str) -> EventWebhook:
    """An EventWebhook for the base64 key SendGrid shows (PEM armour tolerated)."""
    body = "".join(
        line.strip()
        for line in public_key.strip().splitlines()
        if line.strip() and not line.startswith("-----")
    )
    try:
        return EventWebhook(body)
    except (ValueError, TypeError) as exc:
        raise WebhookKeyError(str(exc)) from exc


def signature_is_valid(
    verifier: EventWebhook, payload: str, signature: str, timestamp: str
) -> bool:
    """True only for a signature SendGrid made over timestamp + payload."""
    if not signature or not timestamp:
        return False
    try:
        return bool(verifier.verify_signature(payload, signature, timestamp))
    except (ValueError, TypeError, binascii.Error):  # not base64, not DER
        return False
