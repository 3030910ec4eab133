"""Events: RSVPs within capacity, a waitlist that moves up, confirmations with .ics."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.actions.models import ActionPage

if TYPE_CHECKING:
    from app.actions.service import ActionResult


def after_action(session: Session, page: ActionPage, result: ActionResult, now: datetime) -> None:
    """Give the person a place, or a place on the waitlist."""


def public_context(session: Session, page: ActionPage) -> dict[str, object]:
    """What the public event page shows besides the form (places left, times)."""
    return {}


def thanks_context(session: Session, page: ActionPage, action: object) -> dict[str, object]:
    """What the thank-you page says about this person's RSVP."""
    return {}
