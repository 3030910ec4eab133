"""Letters to officials: addressing, delivery to offices (each or daily digest), signer copy."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.actions.models import ActionPage

if TYPE_CHECKING:
    from app.actions.service import ActionDetails, ActionResult


def after_action(
    session: Session, page: ActionPage, result: ActionResult, details: ActionDetails, now: datetime
) -> None:
    """Store the letter and queue one delivery per target office."""
    result.action.letter_subject = details.letter_subject
    result.action.letter_body = details.letter_body
