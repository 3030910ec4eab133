"""Sending email from Celery tasks: one retry policy for every kind of message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from celery import Task, shared_task
from flask import current_app
from sqlalchemy.orm import Session

from app.extensions import db
from app.integrations.email import EmailProvider, EmailProviderError, provider_from_config
from app.mailings import pipeline
from app.mailings.models import Mailing, MailingStatus
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


# --- The mailing send pipeline (see app/mailings/pipeline.py) --------------------------

# Chunk tasks retry a provider that keeps failing for about a day before the
# mailing is paused for staff to look at (the rows stay queued).
CHUNK_MAX_RETRIES = 12


def _daily_cap() -> int:
    return int(current_app.config.get("MAILING_DAILY_CAP", pipeline.DEFAULT_DAILY_CAP))


def _lease() -> timedelta:
    seconds = current_app.config.get("MAILING_CLAIM_LEASE_SECONDS")
    return timedelta(seconds=float(seconds)) if seconds else pipeline.DEFAULT_LEASE


def enqueue_chunks(mailing_id: int, recipients: int, throttle_per_hour: int | None) -> int:
    """Queue enough chunk tasks for `recipients` queued rows, spread by the throttle."""
    countdowns = pipeline.chunk_countdowns(recipients, throttle_per_hour)
    for countdown in countdowns:
        send_mailing_chunk.apply_async(args=[mailing_id], countdown=countdown or None)
    return len(countdowns)


def start_mailing(session: Session, mailing: Mailing, now: datetime) -> tuple[int, int]:
    """Materialise and mark sending (the caller commits); return (added, queued)."""
    identity = SenderIdentity.from_config(current_app.config)
    added = pipeline.start_send(session, mailing, identity, now, _daily_cap())
    return added, pipeline.queued_count(session, mailing.id)


@shared_task(name="mailings.send")
def send_mailing(mailing_id: int) -> int:
    """Materialise a mailing's recipients, then queue one chunk task per 1,000 of them."""
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        log.warning("mailing %s does not exist", mailing_id)
        return 0
    try:
        added, queued = start_mailing(db.session, mailing, utcnow())
    except (SealError, pipeline.PipelineError) as exc:
        db.session.rollback()
        log.error("mailing %s not sent: %s", mailing_id, exc)
        return 0
    throttle = mailing.throttle_per_hour
    db.session.commit()  # the rows exist before any chunk task looks for them
    enqueue_chunks(mailing_id, queued, throttle)
    return added


@shared_task(name="mailings.send_chunk", bind=True, max_retries=CHUNK_MAX_RETRIES)
def send_mailing_chunk(self: Task, mailing_id: int) -> int:
    """Claim up to 1,000 queued deliveries and send them in one provider call.

    The claim is committed before the provider is called, so a worker that
    dies mid-send leaves its rows `sending` for `mailings.reconcile`. Retryable
    provider errors put the rows back and retry after the provider's
    X-RateLimit-Reset (or with exponential backoff).
    """
    session = db.session
    mailing = session.get(Mailing, mailing_id)
    if mailing is None:
        return 0
    rows = pipeline.claim_chunk(session, mailing_id, utcnow())
    session.commit()
    if not rows:
        pipeline.finish_if_done(session, mailing_id, utcnow())
        session.commit()
        return 0
    config = current_app.config
    try:
        result = pipeline.send_chunk(
            session,
            provider_from_config(config),
            SenderIdentity.from_config(config),
            mailing,
            rows,
            utcnow(),
        )
    except SealError as exc:
        # The body itself broke the rule (it was edited after Send): stop the mailing.
        session.rollback()
        log.error("mailing %s refused by the seal, paused: %s", mailing_id, exc)
        pipeline.release(session, [row.delivery_id for row in rows])
        _pause_quietly(session, mailing_id)
        session.commit()
        return 0
    except EmailProviderError as exc:
        session.commit()  # the rows went back to queued (or failed for good)
        if exc.retryable and self.request.retries < (self.max_retries or 0):
            backoff = min(3600.0, 30.0 * 2**self.request.retries)
            countdown = exc.retry_after if exc.retry_after is not None else backoff
            raise self.retry(exc=exc, countdown=max(1.0, countdown)) from exc
        log.error("mailing %s chunk gave up: %s", mailing_id, exc)
        if exc.retryable:
            _pause_quietly(session, mailing_id)
            session.commit()
        return 0
    pipeline.finish_if_done(session, mailing_id, utcnow())
    session.commit()
    return result.sent


def _pause_quietly(session: Session, mailing_id: int) -> None:
    mailing = session.get(Mailing, mailing_id)
    if mailing is not None and mailing.status == MailingStatus.SENDING:
        pipeline.pause(session, mailing, utcnow())


@shared_task(name="mailings.reconcile")
def reconcile_mailings() -> int:
    """Beat job: re-queue deliveries whose worker died mid-send, and queue tasks for them."""
    requeued_total = 0
    now = utcnow()
    for mailing_id in pipeline.mailings_to_reconcile(db.session):
        result = pipeline.reconcile(db.session, mailing_id, _lease(), now)
        pipeline.finish_if_done(db.session, mailing_id, now)
        mailing = db.session.get(Mailing, mailing_id)
        throttle = mailing.throttle_per_hour if mailing else None
        db.session.commit()
        if result.requeued:
            log.warning(
                "mailing %s: %s deliveries re-queued after a lost worker (possible duplicates)",
                mailing_id,
                result.requeued,
            )
            enqueue_chunks(mailing_id, result.requeued, throttle)
        requeued_total += result.requeued
    return requeued_total
