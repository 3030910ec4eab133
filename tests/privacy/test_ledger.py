"""Rule 1: personal data leaves only by a declared route, recorded with purpose and basis."""

from __future__ import annotations

import dataclasses

import pytest

from app.staff import service as staff_service
from app.staff.models import DisclosureEntry
from app.supporters.models import AppendOnlyError
from app.timeutil import utcnow
from privacy.ledger import Disclosure, DisclosureRefused, Route, check
from tests.factories import StaffFactory

EXPORT = Disclosure(
    route=Route.STAFF_EXPORT,
    recipient="organizer@example.org",
    what="attendees of an event",
    purpose="name badges",
    legal_basis="legitimate interest",
    record_count=12,
)


def test_a_complete_staff_export_passes():
    assert check(EXPORT) is EXPORT


@pytest.mark.parametrize("field", ["recipient", "what", "purpose", "legal_basis"])
def test_every_disclosure_records_who_what_why_and_basis(field):
    with pytest.raises(DisclosureRefused):
        check(dataclasses.replace(EXPORT, **{field: "   "}))


def test_only_declared_routes_and_processors():
    with pytest.raises(DisclosureRefused):
        check(dataclasses.replace(EXPORT, route="sold to a data broker"))  # type: ignore[arg-type]
    processor = dataclasses.replace(EXPORT, route=Route.PROCESSOR, recipient="email provider")
    assert check(processor) is processor
    with pytest.raises(DisclosureRefused):
        check(dataclasses.replace(processor, recipient="advertising partner"))


def test_a_law_disclosure_needs_its_basis():
    court = dataclasses.replace(
        EXPORT, route=Route.REQUIRED_BY_LAW, recipient="District court", legal_basis=""
    )
    with pytest.raises(DisclosureRefused):
        check(court)
    assert check(dataclasses.replace(court, legal_basis="court order 2026-123"))


def test_staff_exports_are_written_to_an_append_only_ledger(app, db_session):
    staff = StaffFactory(email="organizer@example.org", role="organizer")
    entry = staff_service.record_staff_export(
        db_session, staff, "supporters in NY", "phone bank", 40, utcnow()
    )
    db_session.commit()
    assert (entry.recipient, entry.route, entry.record_count) == (
        "organizer@example.org",
        "staff export",
        40,
    )
    with pytest.raises(DisclosureRefused):
        staff_service.record_staff_export(db_session, staff, "supporters", " ", 1, utcnow())
    entry.purpose = "something else"
    with pytest.raises(AppendOnlyError):
        db_session.flush()
    db_session.rollback()
    db_session.delete(db_session.get(DisclosureEntry, entry.id))
    with pytest.raises(AppendOnlyError):
        db_session.flush()
    db_session.rollback()
