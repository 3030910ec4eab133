"""Imports every domain's models, so metadata (and Alembic) sees all tables."""

from app.mailings.models import EmailLog
from app.staff.models import AuditEntry, StaffUser
from app.supporters.models import ConsentEvent, Supporter, Tag, supporter_tags

__all__ = [
    "AuditEntry",
    "ConsentEvent",
    "EmailLog",
    "StaffUser",
    "Supporter",
    "Tag",
    "supporter_tags",
]
