"""One clock for the app: naive UTC datetimes, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC without tzinfo (how every timestamp column stores time)."""
    return datetime.now(UTC).replace(tzinfo=None)
