"""Staff reports on one action page: per day, totals, sources, recruiters, targets.

Every figure is one grouped SQL statement (no rows pulled into Python to be
counted), written to run the same on SQLite and PostgreSQL. Read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, extract, func, literal_column, select
from sqlalchemy.orm import Session

from app.actions.models import Action, ActionPage, CallReport, LetterDelivery, PageKind, Target
from app.actions.service import CALL_OUTCOMES
from app.supporters.models import ConsentEvent, ConsentKind, Supporter

DAYS = 30
TOP = 10
# Action.source values, in the order the report lists them.
SOURCES = ("mailing", "referral", "campaign link", "other site", "direct")
DELIVERY_STATUSES = ("queued", "sent", "skipped")
# A supporter whose record was made within this long of their action joined through it.
NEW_SUPPORTER_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Recruiter:
    supporter_id: int
    name: str
    email: str
    actions: int


@dataclass(frozen=True)
class TargetTally:
    """Counts per status (letters) or outcome (calls) for one target."""

    target_id: int | None
    name: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class PageReport:
    daily: list[tuple[str, int]]
    total: int
    new_supporters: int
    opt_ins: int
    sources: list[tuple[str, int]]
    utm_sources: list[tuple[str, int]]
    utm_campaigns: list[tuple[str, int]]
    referrer_hosts: list[tuple[str, int]]
    recruiters: list[Recruiter]
    letters: list[TargetTally] = field(default_factory=list)
    calls: list[TargetTally] = field(default_factory=list)


def actions_per_day(
    session: Session, page_id: int, now: datetime, days: int = DAYS
) -> list[tuple[str, int]]:
    """Actions per UTC day for the last `days` days, oldest first, zero-filled."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date(Action.created_at)
    rows = session.execute(
        select(day, func.count())
        .where(Action.page_id == page_id, Action.created_at >= start)
        .group_by(day)
    ).all()
    found = {str(d)[:10]: n for d, n in rows}
    labels = [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days)]
    return [(label, found.get(label, 0)) for label in labels]


def total_actions(session: Session, page_id: int) -> int:
    return session.scalar(select(func.count()).where(Action.page_id == page_id)) or 0


def _seconds_apart(session: Session, a: Any, b: Any) -> ColumnElement[Any]:
    """|a - b| in seconds for two timestamp columns, in each database's own words."""
    if session.get_bind().dialect.name == "postgresql":
        return func.abs(extract("epoch", a - b))
    return func.abs((func.julianday(a) - func.julianday(b)) * 86400)


def new_supporters(session: Session, page_id: int) -> int:
    """Actions whose supporter record was created with the action (within a minute)."""
    apart = _seconds_apart(session, Supporter.created_at, Action.created_at)
    return (
        session.scalar(
            select(func.count())
            .select_from(Action)
            .join(Supporter, Supporter.id == Action.supporter_id)
            .where(Action.page_id == page_id, apart <= NEW_SUPPORTER_WINDOW.total_seconds())
        )
        or 0
    )


def opt_ins(session: Session, page: ActionPage) -> int:
    """People who acted here and joined (or rejoined) the email list on this page.

    The consent ledger names the page in its source, as take_action writes it.
    """
    return (
        session.scalar(
            select(func.count(func.distinct(ConsentEvent.supporter_id)))
            .join(Action, Action.supporter_id == ConsentEvent.supporter_id)
            .where(
                Action.page_id == page.id,
                ConsentEvent.source == f"action page /a/{page.slug}",
                ConsentEvent.kind.in_([ConsentKind.SUBSCRIBE, ConsentKind.RESUBSCRIBE]),
            )
        )
        or 0
    )


def sources(session: Session, page_id: int) -> list[tuple[str, int]]:
    """Actions per source: the five known ones always listed, anything else after them."""
    result = session.execute(
        select(Action.source, func.count()).where(Action.page_id == page_id).group_by(Action.source)
    )
    rows: dict[str, int] = {source: int(n) for source, n in result}
    known = [(name, rows.pop(name, 0)) for name in SOURCES]
    return known + sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))


def _top(session: Session, page_id: int, value: Any, limit: int) -> list[tuple[str, int]]:
    """The most common non-empty values of an expression over this page's actions."""
    # Grouped by the output column's name, not by repeating the expression: a JSON
    # path repeated in GROUP BY gets a second bind parameter, which PostgreSQL does
    # not treat as the same expression.
    label: ColumnElement[Any] = literal_column("top_value")
    rows = session.execute(
        select(value.label("top_value"), func.count().label("n"))
        .where(Action.page_id == page_id, value.is_not(None), value != "")
        .group_by(label)
        .order_by(func.count().desc(), label)
        .limit(limit)
    ).all()
    return [(str(v), int(n)) for v, n in rows]


def top_utm(session: Session, page_id: int, key: str, limit: int = TOP) -> list[tuple[str, int]]:
    """Most common values of one utm_* parameter."""
    return _top(session, page_id, Action.utm[key].as_string(), limit)


def top_referrer_hosts(session: Session, page_id: int, limit: int = TOP) -> list[tuple[str, int]]:
    """Other sites that sent people here, by host name."""
    return _top(session, page_id, Action.referrer_host, limit)


def top_recruiters(session: Session, page_id: int, limit: int = TOP) -> list[Recruiter]:
    """Supporters whose share links brought the most actions to this page."""
    n = func.count(Action.id)
    rows = session.execute(
        select(Supporter.id, Supporter.first_name, Supporter.last_name, Supporter.email, n)
        .join(Action, Action.referrer_id == Supporter.id)
        .where(Action.page_id == page_id)
        .group_by(Supporter.id, Supporter.first_name, Supporter.last_name, Supporter.email)
        .order_by(n.desc(), Supporter.id)
        .limit(limit)
    ).all()
    return [
        Recruiter(sid, f"{first} {last}".strip(), email, int(count))
        for sid, first, last, email, count in rows
    ]


def _tallies(rows: list[Any], keys: tuple[str, ...]) -> list[TargetTally]:
    """(target id, name, key, count) rows as one tally per target, busiest first."""
    by_target: dict[int | None, TargetTally] = {}
    for tid, name, key, count in rows:
        tally = by_target.setdefault(
            tid, TargetTally(tid, name or "No office chosen", dict.fromkeys(keys, 0))
        )
        tally.counts[key] = tally.counts.get(key, 0) + int(count)
    return sorted(by_target.values(), key=lambda t: (-t.total, t.name))


def letter_deliveries(session: Session, page_id: int) -> list[TargetTally]:
    """Letters per target office by delivery status (queued, sent, skipped, …)."""
    rows = session.execute(
        select(Target.id, Target.name, LetterDelivery.status, func.count())
        .join(LetterDelivery, LetterDelivery.target_id == Target.id)
        .join(Action, Action.id == LetterDelivery.action_id)
        .where(Action.page_id == page_id)
        .group_by(Target.id, Target.name, LetterDelivery.status)
    ).all()
    return _tallies(list(rows), DELIVERY_STATUSES)


def call_outcomes(session: Session, page_id: int) -> list[TargetTally]:
    """'I called' reports per target by outcome (reached, voicemail, busy)."""
    rows = session.execute(
        select(CallReport.target_id, Target.name, CallReport.outcome, func.count())
        .join(Action, Action.id == CallReport.action_id)
        .outerjoin(Target, Target.id == CallReport.target_id)
        .where(Action.page_id == page_id)
        .group_by(CallReport.target_id, Target.name, CallReport.outcome)
    ).all()
    return _tallies(list(rows), tuple(CALL_OUTCOMES))


def page_report(session: Session, page: ActionPage, now: datetime) -> PageReport:
    """Everything the staff report page shows for one page."""
    return PageReport(
        daily=actions_per_day(session, page.id, now),
        total=total_actions(session, page.id),
        new_supporters=new_supporters(session, page.id),
        opt_ins=opt_ins(session, page),
        sources=sources(session, page.id),
        utm_sources=top_utm(session, page.id, "utm_source"),
        utm_campaigns=top_utm(session, page.id, "utm_campaign"),
        referrer_hosts=top_referrer_hosts(session, page.id),
        recruiters=top_recruiters(session, page.id),
        letters=letter_deliveries(session, page.id) if page.kind == PageKind.LETTER else [],
        calls=call_outcomes(session, page.id) if page.kind == PageKind.CALL else [],
    )
