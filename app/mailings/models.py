"""The log of every email attempt: sent, skipped (with the reason) or failed."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.timeutil import utcnow


class EmailStatus(enum.StrEnum):
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class EmailLog(db.Model):
    __tablename__ = "email_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One row per logical email ("welcome:42"): a retry can never send it twice.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    template: Mapped[str] = mapped_column(String(100))
    supporter_id: Mapped[int | None] = mapped_column(
        ForeignKey("supporters.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default=EmailStatus.SENDING)
    skip_reason: Mapped[str] = mapped_column(String(50), default="")
    provider: Mapped[str] = mapped_column(String(20), default="")
    provider_message_id: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


# 64-bit ids where a million-recipient mailing adds rows fast (SQLite's rowid is 64-bit already).
BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class MailingStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    # A/B test: both variants went to the test share; the rest waits for the winner.
    TESTING = "testing"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    SENT = "sent"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a worker; past its lease it is reconciled or re-queued
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # the seal refused this recipient at send time (unsubscribed meanwhile)
    CANCELLED = "cancelled"


class Mailing(db.Model):
    """A campaign email to a segment: composed once, sent to each recipient at most once."""

    __tablename__ = "mailings"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(300))
    subject_b: Mapped[str] = mapped_column(String(300), default="")  # A/B test variant
    preheader: Mapped[str] = mapped_column(String(300), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    reply_to: Mapped[str] = mapped_column(String(320), default="")
    body_md: Mapped[str] = mapped_column(Text, default="")
    body_format: Mapped[str] = mapped_column(
        String(10), default="markdown", server_default="markdown"
    )  # markdown | html
    # The saved segment chosen in the composer; null = every subscriber.
    segment_id: Mapped[int | None] = mapped_column(
        ForeignKey("segments.id", ondelete="SET NULL"), default=None
    )
    # The chosen segment as it was when sending started, what the mailing went to:
    # {"segment_id", "name", "definition"}; empty = every subscriber.
    segment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=MailingStatus.DRAFT, index=True)
    send_at: Mapped[datetime | None] = mapped_column(default=None)
    throttle_per_hour: Mapped[int | None] = mapped_column(default=None)
    ab_test_percent: Mapped[int | None] = mapped_column(default=None)
    ab_metric: Mapped[str] = mapped_column(String(20), default="opens")
    ab_decide_after_minutes: Mapped[int | None] = mapped_column(default=None)
    ab_winner: Mapped[str] = mapped_column(String(1), default="")
    ab_decided_at: Mapped[datetime | None] = mapped_column(default=None)
    # Recipients are materialised in ranges of supporter ids: the highest id done so far
    # (null = not started) and when the last range was done (null = still materialising).
    materialise_cursor: Mapped[int | None] = mapped_column(BIG_ID, default=None)
    materialised_at: Mapped[datetime | None] = mapped_column(default=None)
    test_sent_at: Mapped[datetime | None] = mapped_column(default=None)
    recipients_count: Mapped[int] = mapped_column(default=0)
    duplicates_count: Mapped[int] = mapped_column(default=0)  # resends after a crash, counted
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Delivery(db.Model):
    """One recipient of one mailing. The unique pair is what makes "at most once" hold."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("mailing_id", "supporter_id"),
        # Only partial indexes involve the status: a row moving queued → sending → sent is
        # written into them only while it matches (each index costs every update).
        # Chunk claims take the lowest queued ids: without this, each claim walks past
        # every row already sent (a million-row send slows down as it goes).
        Index(
            "ix_deliveries_queued",
            "mailing_id",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Reconcile and "is anything still on its way" look at the few rows being sent.
        Index(
            "ix_deliveries_sending",
            "mailing_id",
            "claimed_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    supporter_id: Mapped[int] = mapped_column(ForeignKey("supporters.id"), index=True)
    variant: Mapped[str] = mapped_column(String(1), default="a")
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    provider_message_id: Mapped[str] = mapped_column(String(200), default="")


class MailingLink(db.Model):
    """A link the mailing holds: clicks redirect only to these."""

    __tablename__ = "mailing_links"
    __table_args__ = (UniqueConstraint("mailing_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column()
    url: Mapped[str] = mapped_column(Text)


class TrackingEvent(db.Model):
    """An open or a click on one delivery (first and repeat; likely machine opens flagged)."""

    __tablename__ = "tracking_events"
    __table_args__ = (Index("ix_tracking_events_delivery_kind", "delivery_id", "kind"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(10))  # open | click
    link_position: Mapped[int | None] = mapped_column(default=None)
    machine: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ProviderEvent(db.Model):
    """The webhook inbox: each provider event stored once (unique id), processed after."""

    __tablename__ = "provider_events"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    event_type: Mapped[str] = mapped_column(String(40), index=True)
    delivery_id: Mapped[int | None] = mapped_column(BIG_ID, index=True, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
