"""Celery tasks for letters to officials: thin wrappers over app.actions.letters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from flask import current_app
from sqlalchemy.orm import Session

from app.actions import letters
from app.extensions import db
from app.integrations.email import EmailProvider, EmailProviderError, provider_from_config
from app.mailings.service import SenderIdentity
from app.timeutil import utcnow
from privacy.seal import SealError

if TYPE_CHECKING:
    from app.actions.service import ActionResult

log = logging.getLogger(__name__)

Send = Callable[[Session, EmailProvider, SenderIdentity, datetime], str]


def _send_with_retries(
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


@shared_task(name="letters.send_letter", bind=True, max_retries=10)
def send_letter(self: Task, delivery_id: int) -> str:
    """Send one letter to its office."""
    return _send_with_retries(
        self,
        f"letter delivery {delivery_id}",
        lambda s, p, i, now: letters.send_letter(s, p, i, delivery_id, now),
        lambda reason: letters.mark_failed(db.session, [delivery_id], reason),
    )


@shared_task(name="letters.send_copy", bind=True, max_retries=10)
def send_copy(self: Task, action_id: int) -> str:
    """Send the signer the copy of their letter."""
    return _send_with_retries(
        self,
        f"letter copy for action {action_id}",
        lambda s, p, i, now: letters.send_copy(s, p, i, action_id, now),
    )


@shared_task(name="letters.send_digest", bind=True, max_retries=10)
def send_digest(self: Task, target_id: int) -> str:
    """Send one office today's digest of its queued letters."""
    return _send_with_retries(
        self,
        f"letter digest for target {target_id}",
        lambda s, p, i, now: letters.send_digest(s, p, i, target_id, now),
        lambda reason: letters.mark_failed(
            db.session,
            [d.id for d in letters.queued_digest_deliveries(db.session, target_id)],
            reason,
        ),
    )


@shared_task(name="letters.send_daily_digests")
def send_daily_digests() -> int:
    """Beat job, once a day: one digest task per office with letters waiting."""
    target_ids = letters.digest_target_ids(db.session)
    db.session.commit()
    for target_id in target_ids:
        send_digest.delay(target_id)
    return len(target_ids)


@shared_task(name="letters.send_stale_letters")
def send_stale_letters() -> int:
    """Beat job: queue again letters whose task was never queued (the broker was down)."""
    ids = letters.stale_letter_ids(db.session, utcnow())
    db.session.commit()
    for delivery_id in ids:
        send_letter.delay(delivery_id)
    return len(ids)


def _enqueue(task: Any, *args: int) -> None:
    """Queue a task; the broker being down must not undo the action (the sweep retries)."""
    try:
        task.delay(*args)
    except Exception:
        log.exception("could not queue %s%s", task.name, args)


def enqueue_letter_emails(result: ActionResult) -> None:
    """After a letter action committed: each new letter to its office, then the signer's copy."""
    for delivery_id in result.extra.get("letter_deliveries", []):
        _enqueue(send_letter, delivery_id)
    if result.extra.get("letter_copy"):
        _enqueue(send_copy, result.action.id)
