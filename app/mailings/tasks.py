"""Sending email from Celery tasks: one retry policy for every kind of message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from celery import Task
from flask import current_app
from sqlalchemy.orm import Session

from app.extensions import db
from app.integrations.email import EmailProvider, EmailProviderError, provider_from_config
from app.mailings.service import SenderIdentity
from app.timeutil import utcnow
from privacy.seal import SealError

log = logging.getLogger(__name__)

Send = Callable[[Session, EmailProvider, SenderIdentity, datetime], str]


def send_with_retries(
    task: Task, what: str, send: Send, give_up: Callable[[str], None] | None = None
) -> str:
    """Run one send; retry with backoff while the provider fails, record for good failures."""
    config = current_app.config
    try:
        outcome = send(
            db.session, provider_from_config(config), SenderIdentity.from_config(config), utcnow()
        )
    except SealError as exc:
        db.session.commit()  # the `failed` email row tells staff; a retry would fail the same way
        log.error("%s refused by the seal: %s", what, exc)
        if give_up:
            give_up("refused-by-seal")
            db.session.commit()
        return "refused"
    except EmailProviderError as exc:
        db.session.commit()  # keep the `failed` row and its error for staff to see
        if exc.retryable and task.request.retries < (task.max_retries or 0):
            raise task.retry(exc=exc, countdown=min(3600, 30 * 2**task.request.retries)) from exc
        log.warning("%s failed for good: %s", what, exc)
        if give_up:
            give_up("provider-error")
            db.session.commit()
        return "failed"
    db.session.commit()
    return outcome
