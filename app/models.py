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
from app.mailings.models import (
    Delivery,
    EmailLog,
    Mailing,
    MailingLink,
    ProviderEvent,
    TrackingEvent,
)
from app.staff.models import AuditEntry, DisclosureEntry, StaffUser
from app.supporters.models import ConsentEvent, Supporter, Tag, supporter_tags

__all__ = [
    "Action",
    "ActionPage",
    "AuditEntry",
    "CallReport",
    "ConsentEvent",
    "Delivery",
    "DisclosureEntry",
    "EmailLog",
    "EventRsvp",
    "LetterDelivery",
    "Mailing",
    "MailingLink",
    "PageTarget",
    "ProviderEvent",
    "StaffUser",
    "Supporter",
    "Tag",
    "Target",
    "TrackingEvent",
    "supporter_tags",
]
