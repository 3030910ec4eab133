"""Imports every domain's models, so metadata (and Alembic) sees all tables."""

from app.actions.models import (
    Action,
    ActionPage,
    CallReport,
    EventRsvp,
    LetterDelivery,
    PageTarget,
    Target,
)
from app.mailings.models import EmailLog
from app.staff.models import AuditEntry, DisclosureEntry, StaffUser
from app.supporters.models import ConsentEvent, Supporter, Tag, supporter_tags

__all__ = [
    "Action",
    "ActionPage",
    "AuditEntry",
    "CallReport",
    "ConsentEvent",
    "DisclosureEntry",
    "EmailLog",
    "EventRsvp",
    "LetterDelivery",
    "PageTarget",
    "StaffUser",
    "Supporter",
    "Tag",
    "Target",
    "supporter_tags",
]
