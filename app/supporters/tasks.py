"""Celery tasks for supporters: thin wrappers over the service."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from app.extensions import db
from app.integrations.email import EmailProviderError, provider_from_config
from app.mailings.service import SenderIdentity
from app.supporters import service
from app.timeutil import utcnow
from privacy.seal import SealError

log = logging.getLogger(__name__)


@shared_task(name="supporters.send_welcome", bind=True, max_retries=10)
def send_welcome_email(self, supporter_id: int) -> str:  # type: ignore[no-untyped-def]
    """Send the welcome email once; retry with backoff while the provider fails."""
    config = current_app.config
    try:
        outcome = service.send_welcome(
            db.session,
            provider_from_config(config),
            SenderIdentity.from_config(config),
            supporter_id,
            utcnow(),
        )
    except SealError as exc:
        db.session.commit()  # the `failed` row tells staff; a retry would fail the same way
        log.error("welcome email for supporter %s refused by the seal: %s", supporter_id, exc)
        return "refused"
    except EmailProviderError as exc:
        db.session.commit()  # keep the `failed` row and its error for staff to see
        if not exc.retryable:
            log.warning("welcome email for supporter %s failed for good: %s", supporter_id, exc)
            return "failed"
        raise self.retry(exc=exc, countdown=min(3600, 30 * 2**self.request.retries)) from exc
    db.session.commit()
    return outcome


@shared_task(name="supporters.send_pending_welcomes")
def send_pending_welcomes() -> int:
    """Beat job: enqueue welcome emails that never went out (for example, broker was down)."""
    ids = service.pending_welcome_ids(db.session, utcnow())
    for supporter_id in ids:
        send_welcome_email.delay(supporter_id)
    return len(ids)


def enqueue_welcome(supporter_id: int) -> None:
    """Queue the welcome email after the sign-up committed; the beat sweep covers outages."""
    try:
        send_welcome_email.delay(supporter_id)
    except Exception:  # the broker being down must not lose the sign-up
        log.exception(
            "could not queue welcome email for supporter %s; the sweep will", supporter_id
        )
