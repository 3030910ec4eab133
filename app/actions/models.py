"""Action pages, the actions people take on them, officials to target, event RSVPs."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.timeutil import utcnow


class PageKind(enum.StrEnum):
    PETITION = "petition"
    LETTER = "letter"
    CALL = "call"
    EVENT = "event"
    SIGNUP = "signup"


class PageStatus(enum.StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    CLOSED = "closed"


def new_public_id() -> str:
    return secrets.token_hex(16)


class ActionPage(db.Model):
    __tablename__ = "action_pages"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    body_md: Mapped[str] = mapped_column(Text, default="")
    share_image: Mapped[str] = mapped_column(String(200), default="")  # file name in uploads
    share_image_alt: Mapped[str] = mapped_column(String(300), default="")
    goal: Mapped[int | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(20), default=PageStatus.DRAFT, index=True)
    close_at: Mapped[datetime | None] = mapped_column(default=None)
    thank_you_md: Mapped[str] = mapped_column(Text, default="")
    next_page_id: Mapped[int | None] = mapped_column(
        ForeignKey("action_pages.id", ondelete="SET NULL"), default=None
    )
    share_text: Mapped[str] = mapped_column(String(280), default="")
    hashtag: Mapped[str] = mapped_column(String(100), default="")
    opt_in_default: Mapped[bool] = mapped_column(default=False)
    opt_in_text: Mapped[str] = mapped_column(String(500), default="")
    # Kind-specific settings (letter subject/body/limits, call script, event times...).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(default=None)

    next_page: Mapped[ActionPage | None] = relationship(remote_side=[id])
    targets: Mapped[list[Target]] = relationship(secondary="page_targets", order_by="Target.name")

    def __repr__(self) -> str:
        return f"<ActionPage {self.id} {self.kind} {self.slug}>"


class Target(db.Model):
    """An official (or office) that letters and calls go to."""

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(200), default="")
    office_email: Mapped[str] = mapped_column(String(320), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    region: Mapped[str] = mapped_column(String(100), default="", index=True)
    # Space-separated postal codes (or prefixes ending in *) this official represents.
    postal_codes: Mapped[str] = mapped_column(Text, default="")
    # The office asked to stop receiving letters (every letter carries that link).
    opted_out_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PageTarget(db.Model):
    __tablename__ = "page_targets"

    page_id: Mapped[int] = mapped_column(
        ForeignKey("action_pages.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[int] = mapped_column(
        ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True
    )


class Action(db.Model):
    """One person's action on one page: counted once, however often they submit."""

    __tablename__ = "actions"
    __table_args__ = (UniqueConstraint("page_id", "supporter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("action_pages.id"), index=True)
    supporter_id: Mapped[int] = mapped_column(ForeignKey("supporters.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    comment: Mapped[str] = mapped_column(Text, default="")
    # The signer chose to show their first name and town publicly (off by default).
    show_publicly: Mapped[bool] = mapped_column(default=False)
    public_name: Mapped[str] = mapped_column(String(200), default="")
    letter_subject: Mapped[str] = mapped_column(String(300), default="")
    letter_body: Mapped[str] = mapped_column(Text, default="")
    # Attribution: who referred them, which mailing, which campaign parameters.
    referrer_id: Mapped[int | None] = mapped_column(
        ForeignKey("supporters.id"), index=True, default=None
    )
    mailing_id: Mapped[int | None] = mapped_column(index=True, default=None)
    source: Mapped[str] = mapped_column(String(50), default="direct")
    utm: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    referrer_host: Mapped[str] = mapped_column(String(200), default="")

    page: Mapped[ActionPage] = relationship()
    supporter = relationship("Supporter", foreign_keys=[supporter_id])


class LetterDelivery(db.Model):
    """One letter to one target's office: sent alone or in that office's daily digest."""

    __tablename__ = "letter_deliveries"
    __table_args__ = (UniqueConstraint("action_id", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    skip_reason: Mapped[str] = mapped_column(String(50), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)

    action: Mapped[Action] = relationship()
    target: Mapped[Target] = relationship()


class CallReport(db.Model):
    """An "I called" report: which office, and what happened."""

    __tablename__ = "call_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    target: Mapped[Target | None] = relationship()


class RsvpStatus(enum.StrEnum):
    GOING = "going"
    WAITLISTED = "waitlisted"
    CANCELLED = "cancelled"


class EventRsvp(db.Model):
    __tablename__ = "event_rsvps"
    __table_args__ = (UniqueConstraint("page_id", "supporter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("action_pages.id"), index=True)
    supporter_id: Mapped[int] = mapped_column(ForeignKey("supporters.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=RsvpStatus.GOING, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    page: Mapped[ActionPage] = relationship()
    supporter = relationship("Supporter")
