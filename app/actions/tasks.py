"""Celery tasks for action pages, and what runs once an action is committed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.supporters.tasks import enqueue_welcome

if TYPE_CHECKING:
    from app.actions.service import ActionResult


def after_action_committed(result: ActionResult) -> None:
    """Queue the emails an action causes, once it is safely stored."""
    if result.subscribed_now and result.supporter.welcomed_at is None:
        enqueue_welcome(result.supporter.id)
