"""Staff accounts, sign-in and the audit log. Callers own the transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.staff.models import AuditEntry, DisclosureEntry, Role, StaffUser
from app.supporters.emails import InvalidEmail, normalise_email
from privacy.ledger import Disclosure, Route, check

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both paths take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12


class StaffError(ValueError):
    """A staff operation that cannot be done, in words for a person."""


def audit(
    session: Session,
    actor: StaffUser | None,
    action: str,
    object_type: str = "",
    object_id: object = "",
    now: datetime | None = None,
    **detail: Any,
) -> AuditEntry:
    """Record who changed what. `detail` must not hold passwords or message bodies."""
    entry = AuditEntry(
        staff_user_id=actor.id if actor else None,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        detail=detail,
    )
    if now is not None:
        entry.created_at = now
    session.add(entry)
    return entry


def create_staff(
    session: Session, email: str, password: str, role: str, actor: StaffUser | None = None
) -> StaffUser:
    """Create a staff account; raises StaffError with a readable reason."""
    try:
        address = normalise_email(email)
    except InvalidEmail as exc:
        raise StaffError(str(exc)) from None
    if role not in {r.value for r in Role}:
        raise StaffError(f"Role must be one of: {', '.join(r.value for r in Role)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if session.scalar(select(StaffUser).where(StaffUser.email == address)):
        raise StaffError("There is already a staff account with that email address.")
    user = StaffUser(email=address, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    audit(session, actor, "staff.create", "staff_user", user.id, role=role)
    return user


def authenticate(session: Session, email: str, password: str, now: datetime) -> StaffUser | None:
    """The active staff user with these credentials, or None."""
    try:
        address = normalise_email(email)
    except InvalidEmail:
        address = ""
    user = session.scalar(select(StaffUser).where(StaffUser.email == address)) if address else None
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    audit(session, user, "staff.login", "staff_user", user.id, now=now)
    return user


def staff_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(StaffUser)) or 0


def recent_audit(session: Session, limit: int = 200) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))


def record_staff_export(
    session: Session, actor: StaffUser, what: str, purpose: str, record_count: int, now: datetime
) -> DisclosureEntry:
    """Write a staff export of personal data to the disclosure ledger (and the audit log).

    Raises privacy.ledger.DisclosureRefused when the purpose is missing.
    """
    disclosure = check(
        Disclosure(
            route=Route.STAFF_EXPORT,
            recipient=actor.email,
            what=what,
            purpose=purpose.strip()[:500],
            legal_basis="legitimate interest: the organisation's own campaign work",
            record_count=record_count,
        )
    )
    entry = DisclosureEntry(
        staff_user_id=actor.id,
        route=disclosure.route.value,
        recipient=disclosure.recipient,
        what=disclosure.what[:500],
        purpose=disclosure.purpose,
        legal_basis=disclosure.legal_basis,
        record_count=disclosure.record_count,
        created_at=now,
    )
    session.add(entry)
    audit(session, actor, "privacy.export", "disclosure", "", now=now, what=what, rows=record_count)
    session.flush()
    return entry


def recent_disclosures(session: Session, limit: int = 200) -> list[DisclosureEntry]:
    return list(
        session.scalars(select(DisclosureEntry).order_by(DisclosureEntry.id.desc()).limit(limit))
    )
