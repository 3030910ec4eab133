"""Celery tasks for supporters: thin wrappers over the service."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from app.extensions import db
from app.mailings.tasks import send_with_retries
from app.supporters import service
from app.timeutil import utcnow

log = logging.getLogger(__name__)


@shared_task(name="supporters.send_welcome", bind=True, max_retries=10)
def send_welcome_email(self: Task, supporter_id: int) -> str:
    """Send the welcome email once; retry with backoff while the provider fails."""
    return send_with_retries(
        self,
        f"welcome email for supporter {supporter_id}",
        lambda session, provider, identity, now: service.send_welcome(
            session, provider, identity, supporter_id, now
        ),
    )


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
