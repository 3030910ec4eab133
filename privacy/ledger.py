"""Rule 1: personal data leaves only by a declared route, and every time is written down.

The routes are the policy's: staff exports inside the organisation, the
declared processors that deliver our own service, and disclosures required by
law. `check()` refuses anything else, or an entry without its purpose or legal
basis; the application writes each checked entry to an append-only ledger.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Route(enum.StrEnum):
    STAFF_EXPORT = "staff export"
    PROCESSOR = "declared processor"
    REQUIRED_BY_LAW = "required by law"


# The only outside companies that may receive personal data (they work for us).
DECLARED_PROCESSORS = frozenset({"email provider", "payment provider"})


class DisclosureRefused(ValueError):
    """The disclosure is not one the policy allows, or lacks what must be recorded."""


@dataclass(frozen=True)
class Disclosure:
    """One release of personal data: who gets it, what, why, on what basis."""

    route: Route
    recipient: str  # for staff exports, the staff member; for the law, the authority
    what: str  # the fields or records released, in words
    purpose: str
    legal_basis: str
    record_count: int


def check(disclosure: Disclosure) -> Disclosure:
    """Return the disclosure if the policy allows it; raise DisclosureRefused otherwise."""
    if not isinstance(disclosure.route, Route):
        raise DisclosureRefused("personal data may leave only by a declared route")
    for name in ("recipient", "what", "purpose", "legal_basis"):
        if not str(getattr(disclosure, name)).strip():
            raise DisclosureRefused(f"a disclosure must record its {name.replace('_', ' ')}")
    if disclosure.record_count < 0:
        raise DisclosureRefused("the number of records cannot be negative")
    if disclosure.route is Route.PROCESSOR and disclosure.recipient not in DECLARED_PROCESSORS:
        raise DisclosureRefused(f"{disclosure.recipient!r} is not a declared processor")
    return disclosure
