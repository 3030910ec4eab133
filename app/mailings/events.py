"""Provider events: the webhook inbox (stored once per event id) and what each event changes.

`store_sendgrid_events` keeps each event once, keyed by SendGrid's `sg_event_id`, with
the delivery id the send pipeline put in `custom_args`. `process_pending` then applies
them: delivered/processed mark the delivery sent, a hard bounce suppresses the address,
a spam report unsubscribes and suppresses it, an unsubscribe unsubscribes, and the opens
and clicks SendGrid reports become tracking events.

Privacy rule 4: the IP address and user agent SendGrid includes on open and click events
are dropped before storing; only a machine flag is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.mailings import tracking
from app.mailings.models import (
    Delivery,
    DeliveryStatus,
    MailingLink,
    ProviderEvent,
)
from app.supporters import service as supporters
from app.supporters.models import Supporter, SupporterStatus
from app.timeutil import utcnow

log = logging.getLogger(__name__)

PROVIDER = "sendgrid"
# Never stored (privacy rule 4): the reader's address and software.
DROPPED_FIELDS = frozenset({"ip", "useragent"})
HARD_BOUNCE = "bounce"  # a bounce event's "type": "bounce" (hard) or "blocked"
SENT_EVENTS = frozenset({"processed", "delivered"})
UNSUBSCRIBE_EVENTS = frozenset({"unsubscribe", "group_unsubscribe"})


def _delivery_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if 0 < number < 2**63 else None
    return None


def _event_id(event: dict[str, Any]) -> str:
    """SendGrid's sg_event_id; a digest of the event for the rare one that lacks it."""
    value = event.get("sg_event_id")
    if isinstance(value, str) and value.strip():
        return value.strip()[:200]
    digest = hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
    return f"sha256:{digest}"


def clean_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The event as stored: without IP address and user agent, with the machine flag."""
    kept = {k: v for k, v in event.items() if k not in DROPPED_FIELDS}
    if event.get("event") in ("open", "click"):
        kept["machine"] = bool(event.get("sg_machine_open")) or tracking.is_proxy_user_agent(
            str(event.get("useragent") or "")
        )
    return kept


def store_sendgrid_events(session: Session, events: Iterable[object], now: datetime) -> int:
    """Add events to the inbox, ignoring ids already there. Returns how many were new."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        event_id = _event_id(event)
        rows.setdefault(
            event_id,
            {
                "provider": PROVIDER,
                "event_id": event_id,
                "event_type": str(event.get("event") or "")[:40],
                "delivery_id": _delivery_id(event.get("delivery_id")),
                "payload": clean_payload(event),
                "received_at": now,
            },
        )
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = ProviderEvent.__table__
    stmt = (
        insert(table)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table.c.event_id)
    )
    added = session.connection().execute(stmt, list(rows.values())).all()
    return len(added)


def mark_processed(
    session: Session, delivery_ids: Iterable[int], now: datetime | None = None
) -> int:
    """The provider accepted these deliveries: `sending` → `sent` (reconcile calls this too).

    Only rows still `sending` change; returns how many did.
    """
    ids = sorted({int(i) for i in delivery_ids})
    if not ids:
        return 0
    now = now or utcnow()
    changed = 0
    for start in range(0, len(ids), 1000):
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(ids[start : start + 1000]),
                Delivery.status == DeliveryStatus.SENDING,
            )
            .values(status=DeliveryStatus.SENT, sent_at=now)
            .execution_options(synchronize_session=False)
        )
        changed += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
    session.flush()
    return changed


def _event_time(payload: dict[str, Any], fallback: datetime) -> datetime:
    stamp = payload.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 0:
        try:
            return datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            pass
    return fallback


def _supporter(session: Session, event: ProviderEvent) -> Supporter | None:
    """Whom the event is about: the delivery's supporter, else the address it names."""
    supporter = None
    if event.delivery_id is not None:
        supporter = session.scalar(
            select(Supporter)
            .join(Delivery, Delivery.supporter_id == Supporter.id)
            .where(Delivery.id == event.delivery_id)
        )
    if supporter is None:
        email = event.payload.get("email")
        if isinstance(email, str) and email.strip():
            supporter = supporters.find_by_email(session, email.strip().lower())
    if supporter is None or supporter.status == SupporterStatus.ERASED:
        return None
    return supporter


def _suppress(
    session: Session, event: ProviderEvent, status: SupporterStatus, now: datetime
) -> None:
    supporter = _supporter(session, event)
    if supporter is None or supporter.status == status:
        return
    if status == SupporterStatus.BOUNCED and supporter.status == SupporterStatus.COMPLAINED:
        return  # a complaint is the stronger reason; keep it
    reason = str(event.payload.get("reason") or event.event_type)[:200]
    supporters.suppress(session, supporter, status, f"sendgrid {event.event_type}", now, reason)


def _unsubscribe(session: Session, event: ProviderEvent, now: datetime) -> None:
    supporter = _supporter(session, event)
    if supporter is not None and supporter.status in (
        SupporterStatus.SUBSCRIBED,
        SupporterStatus.NOT_SUBSCRIBED,
    ):
        supporters.unsubscribe(session, supporter, f"sendgrid {event.event_type}", now)


def _tracking_hit(session: Session, event: ProviderEvent, now: datetime) -> None:
    if event.delivery_id is None:
        return
    at = _event_time(event.payload, now)
    machine = bool(event.payload.get("machine"))
    if event.event_type == "open":
        hit = tracking.Hit("open", event.delivery_id, at, None, machine)
        tracking.insert_hits(session, [hit], dedupe=False)
        return
    position = None
    url = event.payload.get("url")
    if isinstance(url, str) and url:
        position = session.scalar(
            select(MailingLink.position)
            .join(Delivery, Delivery.mailing_id == MailingLink.mailing_id)
            .where(Delivery.id == event.delivery_id, MailingLink.url == url)
            .order_by(MailingLink.position)
            .limit(1)
        )
    hit = tracking.Hit("click", event.delivery_id, at, position, machine)
    tracking.insert_hits(session, [hit], dedupe=False)


def apply_event(session: Session, event: ProviderEvent, now: datetime) -> None:
    """What one stored event changes. Events of other kinds are kept and change nothing."""
    kind = event.event_type
    if kind in SENT_EVENTS:
        if event.delivery_id is not None:
            mark_processed(session, [event.delivery_id], _event_time(event.payload, now))
    elif kind == "bounce":
        if str(event.payload.get("type") or HARD_BOUNCE) == HARD_BOUNCE:
            _suppress(session, event, SupporterStatus.BOUNCED, now)
    elif kind == "spamreport":
        _unsubscribe(session, event, now)
        _suppress(session, event, SupporterStatus.COMPLAINED, now)
    elif kind in UNSUBSCRIBE_EVENTS:
        _unsubscribe(session, event, now)
    elif kind in ("open", "click"):
        _tracking_hit(session, event, now)
    elif kind == "dropped":
        _apply_drop(session, event, now)
    # deferred (SendGrid retries by itself), group_resubscribe…: recorded in the inbox (and
    # counted in reports), nothing else.


def _apply_drop(session: Session, event: ProviderEvent, now: datetime) -> None:
    """SendGrid drops mail to addresses on its own suppression lists: follow its reason, so
    we stop mailing an address SendGrid will not deliver to. Other reasons (content,
    a full account) say nothing about the person and change nothing."""
    reason = str(event.payload.get("reason") or "").lower()
    if "spam reporting" in reason:
        _unsubscribe(session, event, now)
        _suppress(session, event, SupporterStatus.COMPLAINED, now)
    elif "bounced address" in reason or "invalid" in reason:
        _suppress(session, event, SupporterStatus.BOUNCED, now)
    elif "unsubscribed address" in reason:
        _unsubscribe(session, event, now)


def process_pending(session: Session, now: datetime, limit: int = 500) -> int:
    """Apply up to `limit` unprocessed events, oldest first; flushes, never commits.

    On PostgreSQL the rows are locked with SKIP LOCKED, so several workers share the
    inbox. An event that fails is left unprocessed (and logged) for the next sweep.
    """
    events = session.scalars(
        select(ProviderEvent)
        .where(ProviderEvent.processed_at.is_(None))
        .order_by(ProviderEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    done = 0
    for event in events:
        try:
            with session.begin_nested():
                apply_event(session, event, now)
                event.processed_at = now
                session.flush()
            done += 1
        except Exception:
            log.exception("provider event %s (%s) not processed", event.id, event.event_type)
    return done
