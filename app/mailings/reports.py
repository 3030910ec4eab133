"""The mailing report: who got it, who opened (people and machines apart), who clicked
what, who left, who complained, and what the mailing moved people to do.

Every figure is one set-based query (no per-recipient loop), the same SQL on SQLite and
PostgreSQL, so a report on a million-recipient mailing stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Integer, and_, case, cast, distinct, exists, extract, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.actions.models import Action
from app.mailings.models import Delivery, DeliveryStatus, Mailing, MailingLink, ProviderEvent
from app.mailings.models import TrackingEvent as Hit
from app.supporters.models import ConsentEvent, ConsentKind

CHART_HOURS = 48
# An unsubscribe by a recipient within this long of their copy is credited to the mailing.
UNSUBSCRIBE_WINDOW = timedelta(days=7)
UNSUBSCRIBE_EVENTS = ("unsubscribe", "group_unsubscribe")


@dataclass(frozen=True)
class LinkClicks:
    position: int
    url: str
    unique: int
    total: int


@dataclass(frozen=True)
class HourBucket:
    hour: int  # hours since the send started: 0 … 47
    human_opens: int
    machine_opens: int
    clicks: int


@dataclass
class MailingReport:
    mailing_id: int
    started_at: datetime | None
    recipients: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    dropped: int = 0
    opens_total: int = 0
    opens_unique: int = 0
    opens_unique_human: int = 0  # at least one open that looked like a person
    opens_unique_machine: int = 0  # only ever opened by a proxy or scanner
    clicks_total: int = 0
    clicks_unique: int = 0
    clicks_unique_human: int = 0
    links: list[LinkClicks] = field(default_factory=list)
    unsubscribes: int = 0
    complaints: int = 0
    actions: int = 0
    # Donations do not exist yet; the report says so rather than showing 0.
    money_raised_cents: int | None = None
    hourly: list[HourBucket] = field(default_factory=list)

    def rate(self, count: int) -> float:
        """A share of the messages sent (0 when none were)."""
        return count / self.sent if self.sent else 0.0


def _hours_since(session: Session, column: ColumnElement, start: datetime) -> ColumnElement:
    """Whole hours from `start` to `column`, in the database's own date arithmetic."""
    if session.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", column - start)
        return cast(func.floor(seconds / 3600), Integer)
    # SQLite stores timestamps as ISO text; julianday() reads them (and the bound start).
    days = func.julianday(column) - func.julianday(start.isoformat(sep=" "))
    return cast(days * 24, Integer)


def _start(session: Session, mailing: Mailing) -> datetime | None:
    if mailing.started_at is not None:
        return mailing.started_at
    return session.scalar(
        select(func.min(Delivery.sent_at)).where(Delivery.mailing_id == mailing.id)
    )


def mailing_report(session: Session, mailing_id: int) -> MailingReport | None:
    mailing = session.get(Mailing, mailing_id)
    if mailing is None:
        return None
    start = _start(session, mailing)
    report = MailingReport(mailing_id=mailing_id, started_at=start)
    ours = Delivery.mailing_id == mailing_id

    # Recipients and messages handed to the provider.
    recipients, sent = session.execute(
        select(
            func.count(Delivery.id),
            func.coalesce(func.sum(case((Delivery.status == DeliveryStatus.SENT, 1), else_=0)), 0),
        ).where(ours)
    ).one()
    report.recipients, report.sent = int(recipients), int(sent)

    # What the provider told us, one count of recipients per kind of event.
    by_type = dict(
        session.execute(
            select(ProviderEvent.event_type, func.count(distinct(ProviderEvent.delivery_id)))
            .join(Delivery, Delivery.id == ProviderEvent.delivery_id)
            .where(
                ours,
                ProviderEvent.event_type.in_(["delivered", "bounce", "dropped", "spamreport"]),
            )
            .group_by(ProviderEvent.event_type)
        ).all()
    )
    report.delivered = int(by_type.get("delivered", 0))
    report.bounced = int(by_type.get("bounce", 0))
    report.dropped = int(by_type.get("dropped", 0))
    report.complaints = int(by_type.get("spamreport", 0))

    # Opens: per delivery, whether any open looked human; then counted.
    per_delivery = (
        select(
            Hit.delivery_id.label("delivery_id"),
            func.max(case((Hit.machine, 0), else_=1)).label("human"),
            func.count(Hit.id).label("n"),
        )
        .join(Delivery, Delivery.id == Hit.delivery_id)
        .where(ours, Hit.kind == "open")
        .group_by(Hit.delivery_id)
        .subquery()
    )
    unique, human, total = session.execute(
        select(
            func.count(per_delivery.c.delivery_id),
            func.coalesce(func.sum(per_delivery.c.human), 0),
            func.coalesce(func.sum(per_delivery.c.n), 0),
        )
    ).one()
    report.opens_unique, report.opens_unique_human = int(unique), int(human)
    report.opens_unique_machine, report.opens_total = int(unique) - int(human), int(total)

    # Clicks, overall and per link the mailing holds.
    clicks = (
        select(Hit.id, Hit.delivery_id, Hit.link_position, Hit.machine)
        .join(Delivery, Delivery.id == Hit.delivery_id)
        .where(ours, Hit.kind == "click")
        .subquery()
    )
    total, unique, unique_human = session.execute(
        select(
            func.count(clicks.c.id),
            func.count(distinct(clicks.c.delivery_id)),
            func.count(distinct(case((~clicks.c.machine, clicks.c.delivery_id)))),
        )
    ).one()
    report.clicks_total, report.clicks_unique = int(total), int(unique)
    report.clicks_unique_human = int(unique_human)
    report.links = [
        LinkClicks(position, url, int(unique), int(total))
        for position, url, unique, total in session.execute(
            select(
                MailingLink.position,
                MailingLink.url,
                func.count(distinct(clicks.c.delivery_id)),
                func.count(clicks.c.id),
            )
            .outerjoin(clicks, clicks.c.link_position == MailingLink.position)
            .where(MailingLink.mailing_id == mailing_id)
            .group_by(MailingLink.position, MailingLink.url)
            .order_by(MailingLink.position)
        ).all()
    ]

    # Unsubscribes: through the provider, or on our own pages soon after their copy came.
    provider_unsub = exists().where(
        ProviderEvent.delivery_id == Delivery.id,
        ProviderEvent.event_type.in_(UNSUBSCRIBE_EVENTS),
    )
    conditions = [provider_unsub]
    if start is not None:
        conditions.append(
            exists().where(
                ConsentEvent.supporter_id == Delivery.supporter_id,
                ConsentEvent.kind == ConsentKind.UNSUBSCRIBE,
                ConsentEvent.created_at >= Delivery.sent_at,
                ConsentEvent.created_at < start + UNSUBSCRIBE_WINDOW,
            )
        )
    report.unsubscribes = int(
        session.scalar(select(func.count(Delivery.id)).where(ours, or_(*conditions))) or 0
    )

    report.actions = int(
        session.scalar(select(func.count(Action.id)).where(Action.mailing_id == mailing_id)) or 0
    )
    report.hourly = _hourly(session, mailing_id, start)
    return report


def _hourly(session: Session, mailing_id: int, start: datetime | None) -> list[HourBucket]:
    """Opens (people, machines) and clicks per hour for the first 48 hours, zero-filled."""
    counts: dict[tuple[int, str, bool], int] = {}
    if start is not None:
        hour = _hours_since(session, Hit.created_at, start).label("hour")
        rows = session.execute(
            select(hour, Hit.kind, Hit.machine, func.count(Hit.id))
            .join(Delivery, Delivery.id == Hit.delivery_id)
            .where(
                Delivery.mailing_id == mailing_id,
                and_(
                    Hit.created_at >= start,
                    Hit.created_at < start + timedelta(hours=CHART_HOURS),
                ),
            )
            .group_by(hour, Hit.kind, Hit.machine)
        ).all()
        for h, kind, machine, n in rows:
            key = (int(h), kind, bool(machine))
            counts[key] = counts.get(key, 0) + int(n)
    return [
        HourBucket(
            hour=h,
            human_opens=counts.get((h, "open", False), 0),
            machine_opens=counts.get((h, "open", True), 0),
            clicks=counts.get((h, "click", False), 0) + counts.get((h, "click", True), 0),
        )
        for h in range(CHART_HOURS)
    ]
