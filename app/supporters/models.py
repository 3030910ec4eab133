"""Supporter, consent ledger and tag tables."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Table, Text, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.timeutil import utcnow


class SupporterStatus(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"
    # Took an action without joining the list: only mail they asked for (a copy, a ticket).
    NOT_SUBSCRIBED = "not_subscribed"


class ConsentKind(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SNOOZE = "snooze"
    RESUBSCRIBE = "resubscribe"
    SUPPRESS = "suppress"
    # Not consent as such, but the supporter's own change to their record, kept beside it.
    DETAILS = "details"


supporter_tags = Table(
    "supporter_tags",
    db.metadata,
    Column("supporter_id", ForeignKey("supporters.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # Segments ask "who has tag X": the primary key leads with supporter_id, so this one
    # leads with the tag.
    Index("ix_supporter_tags_tag_supporter", "tag_id", "supporter_id"),
)


def _new_public_id() -> str:
    return uuid.uuid4().hex


class Supporter(db.Model):
    __tablename__ = "supporters"
    __table_args__ = (Index("ix_supporters_country_postal_code", "country", "postal_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random id used in signed email tokens: reveals nothing about the person.
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=_new_public_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    status: Mapped[str] = mapped_column(String(20), default=SupporterStatus.SUBSCRIBED, index=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(default=None)
    source: Mapped[str] = mapped_column(String(200), default="")
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Short code in the share links this supporter spreads; given out on first use.
    referral_code: Mapped[str | None] = mapped_column(String(16), unique=True, default=None)
    # When the welcome email was handed to the provider (or skipped); null = still owed.
    welcomed_at: Mapped[datetime | None] = mapped_column(default=None)

    tags: Mapped[list[Tag]] = relationship(secondary=supporter_tags, back_populates="supporters")
    consent_events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="supporter", order_by="ConsentEvent.id"
    )

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def __repr__(self) -> str:  # no personal data in reprs: they end up in logs
        return f"<Supporter {self.id}>"


class ConsentEvent(db.Model):
    """Append-only: every subscribe, unsubscribe, snooze, resubscribe and suppression."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    supporter_id: Mapped[int] = mapped_column(ForeignKey("supporters.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(200))
    policy_version: Mapped[str] = mapped_column(String(20))
    # The exact text the person agreed to, or what happened, in words.
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    supporter: Mapped[Supporter] = relationship(back_populates="consent_events")


class AppendOnlyError(RuntimeError):
    """Raised when code tries to change or delete a ledger row."""


@event.listens_for(ConsentEvent, "before_update")
def _refuse_update(mapper: object, connection: object, target: ConsentEvent) -> None:
    raise AppendOnlyError("consent_events is append-only")


@event.listens_for(ConsentEvent, "before_delete")
def _refuse_delete(mapper: object, connection: object, target: ConsentEvent) -> None:
    raise AppendOnlyError("consent_events is append-only")


class Tag(db.Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    supporters: Mapped[list[Supporter]] = relationship(
        secondary=supporter_tags, back_populates="tags"
    )


class Segment(db.Model):
    """A saved segment: a named filter over supporters (see app/supporters/segments.py)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # {"match": "all"|"any", "include": [condition...], "exclude": [condition...]}
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
