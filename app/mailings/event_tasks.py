"""Celery tasks for tracking and provider events: thin wrappers over the services."""

from __future__ import annotations

import logging

from celery import shared_task
from flask import current_app

from app.extensions import db
from app.mailings import events, tracking
from app.timeutil import utcnow

log = logging.getLogger(__name__)

BATCH = 500


@shared_task(name="webhooks.process_provider_events")
def process_provider_events(max_batches: int = 20) -> int:
    """Apply stored provider events, a batch per transaction (also the beat sweep)."""
    total = 0
    for _ in range(max_batches):
        done = events.process_pending(db.session, utcnow(), limit=BATCH)
        db.session.commit()
        total += done
        if done < BATCH:
            break
    return total


@shared_task(name="tracking.drain_spool")
def drain_tracking_spool() -> int:
    """Beat job: insert the opens and clicks spooled while the database was unavailable."""
    added = tracking.drain_spool(db.session, tracking.spool_dir_for(current_app.instance_path))
    if added:
        log.info("tracking: %s spooled events stored", added)
    return added


def enqueue_processing() -> None:
    """Queue processing after the webhook stored its events; the beat sweep covers outages."""
    try:
        process_provider_events.delay()
    except Exception:  # a broker outage must not fail the webhook: the events are stored
        log.exception("could not queue provider event processing; the sweep will")
