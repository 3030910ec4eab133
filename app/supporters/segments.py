"""Saved segments: a JSON definition, its validation, the SQL it means, and its count.

A definition is
    {"match": "all" | "any", "include": [condition, ...], "exclude": [condition, ...]}
An empty `include` means every supporter; anyone matching any `exclude` condition is
left out whatever the includes say. `condition()` turns a definition into a WHERE
clause over `Supporter` made of EXISTS / NOT EXISTS semi-joins, so the count here and
the send pipeline's INSERT ... SELECT run the same set-based SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    not_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session

from app.actions.models import Action, ActionPage
from app.mailings.models import Delivery, DeliveryStatus, Mailing, MailingStatus, TrackingEvent
from app.staff.models import Role, StaffUser
from app.staff.service import audit
from app.supporters.models import Segment, Supporter, SupporterStatus, Tag, supporter_tags

SEGMENT_EDITORS = (Role.ADMIN, Role.ORGANIZER)
CONDITION_TYPES = (
    "tags",
    "action",
    "joined",
    "location",
    "mailing",
    "engaged",
    "custom_field",
    "donated",
)
MAX_CONDITIONS = 30
MAX_IDS = 500
MAX_DAYS = 36_500
NAME_MAX = 200
# Custom field names become a JSON path: keep them to plain characters.
FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,99}$")
# Mailings that have not finished with their audience: deleting their segment would
# widen it to every subscriber, so it is refused.
UNFINISHED = (
    MailingStatus.DRAFT,
    MailingStatus.SCHEDULED,
    MailingStatus.SENDING,
    MailingStatus.TESTING,
    MailingStatus.PAUSED,
)


class SegmentError(ValueError):
    """A definition or a save that cannot stand, in words shown to staff as they are.

    `errors` maps where the problem is ("name", "include.0.tag_ids", "match") to its
    message, so a form can show each message beside its field.
    """

    def __init__(self, errors: dict[str, str] | str) -> None:
        self.errors = {"": errors} if isinstance(errors, str) else dict(errors)
        super().__init__(" ".join(self.errors.values()))


class SegmentNotAllowed(PermissionError):
    """The staff member's role may not change segments."""


@dataclass(frozen=True)
class SegmentCount:
    matching: int  # supporters the definition matches, whatever their status
    mailable: int  # of those: subscribed and not snoozed


# --- validation ------------------------------------------------------------------------


class _Checker:
    """Collects every problem in a definition instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def fail(self, where: str, message: str) -> None:
        self.errors.setdefault(where, message)

    def ids(self, raw: Any, where: str, what: str) -> list[int]:
        if not isinstance(raw, list) or not raw:
            self.fail(where, f"Choose at least one {what}.")
            return []
        if len(raw) > MAX_IDS:
            self.fail(where, f"Choose at most {MAX_IDS} {what}s.")
            return []
        if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in raw):
            self.fail(where, f"Each {what} must be given by its id (a positive whole number).")
            return []
        return sorted(set(raw))

    def day(self, raw: Any, where: str, label: str) -> str | None:
        if raw in (None, ""):
            return None
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw.strip()).isoformat()
            except ValueError:
                pass
        self.fail(where, f"{label} must be a date like 2024-03-31.")
        return None

    def whole(self, raw: Any, where: str, label: str, low: int, high: int) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            self.fail(where, f"{label} must be a whole number from {low} to {high}.")
            return low
        return raw

    def choice(self, raw: Any, where: str, label: str, options: tuple[str, ...]) -> str:
        if raw not in options:
            self.fail(where, f"{label} must be one of: {', '.join(options)}.")
            return options[0]
        return str(raw)

    def text(self, raw: Any, where: str, label: str, limit: int) -> str:
        if raw is None:
            return ""
        if not isinstance(raw, str):
            self.fail(where, f"{label} must be text.")
            return ""
        value = raw.strip()
        if len(value) > limit:
            self.fail(where, f"{label} can be at most {limit} characters.")
        return value

    def keys(self, item: dict[str, Any], where: str, allowed: set[str]) -> None:
        # A misspelt key ("exlude") silently ignored would widen the audience: refuse it.
        unknown = sorted(set(item) - allowed)
        if unknown:
            self.fail(where, f"Unknown setting: {', '.join(unknown)}.")

    def condition(self, raw: Any, where: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.fail(where, "Each condition must be an object with a type.")
            return None
        kind = raw.get("type")
        if kind == "donated":
            self.fail(f"{where}.type", "Donation conditions arrive with donations.")
            return None
        if kind not in CONDITION_TYPES:
            self.fail(
                f"{where}.type",
                f"Unknown condition type {kind!r}: choose one of "
                + ", ".join(t for t in CONDITION_TYPES if t != "donated")
                + ".",
            )
            return None
        return getattr(self, f"_{kind}")(raw, where)

    def _tags(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "mode", "tag_ids"})
        mode = self.choice(
            raw.get("mode", "any"), f"{where}.mode", "Tag mode", ("any", "all", "none")
        )
        return {
            "type": "tags",
            "mode": mode,
            "tag_ids": self.ids(raw.get("tag_ids"), f"{where}.tag_ids", "tag"),
        }

    def _action(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "took", "page_ids"})
        took = raw.get("took", True)
        if not isinstance(took, bool):
            self.fail(
                f"{where}.took", "Say whether they took the action or did not (true or false)."
            )
            took = True
        page_ids = self.ids(raw.get("page_ids"), f"{where}.page_ids", "action page")
        return {"type": "action", "took": took, "page_ids": page_ids}

    def _joined(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "from", "to"})
        start = self.day(raw.get("from"), f"{where}.from", "The first day")
        end = self.day(raw.get("to"), f"{where}.to", "The last day")
        unread = f"{where}.from" not in self.errors and f"{where}.to" not in self.errors
        if start is None and end is None and unread:
            self.fail(f"{where}.from", "Give a first day, a last day, or both.")
        if start and end and start > end:
            self.fail(f"{where}.to", "The last day must be on or after the first day.")
        return {"type": "joined", "from": start, "to": end}

    def _location(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "country", "postal_prefix"})
        country = self.text(raw.get("country"), f"{where}.country", "Country", 2).upper()
        if country and not re.fullmatch(r"[A-Z]{2}", country):
            self.fail(f"{where}.country", "Country must be a two-letter code such as GB or US.")
        prefix = self.text(
            raw.get("postal_prefix"), f"{where}.postal_prefix", "Postal code start", 20
        )
        if not country and not prefix and not any(k.startswith(where + ".") for k in self.errors):
            self.fail(f"{where}.country", "Give a country, the start of a postal code, or both.")
        return {"type": "location", "country": country, "postal_prefix": prefix}

    def _mailing(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "event", "mailing_id"})
        event = self.choice(
            raw.get("event"), f"{where}.event", "Mailing event", ("received", "opened", "clicked")
        )
        mailing_id = raw.get("mailing_id")
        if isinstance(mailing_id, bool) or not isinstance(mailing_id, int) or mailing_id <= 0:
            self.fail(f"{where}.mailing_id", "Choose a mailing.")
            mailing_id = 0
        return {"type": "mailing", "event": event, "mailing_id": mailing_id}

    def _engaged(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "days"})
        days = self.whole(raw.get("days"), f"{where}.days", "Days", 1, MAX_DAYS)
        return {"type": "engaged", "days": days}

    def _custom_field(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        self.keys(raw, where, {"type", "field", "op", "value"})
        field = self.text(raw.get("field"), f"{where}.field", "Field name", 100)
        if not FIELD_NAME.fullmatch(field):
            self.fail(
                f"{where}.field",
                "Field name: letters, digits, spaces, dots, hyphens and underscores only.",
            )
        op = self.choice(raw.get("op", "equals"), f"{where}.op", "Test", ("equals", "is_set"))
        value = self.text(raw.get("value"), f"{where}.value", "Value", 500)
        if op == "equals" and not value:
            self.fail(f"{where}.value", "Give the value to compare with.")
        return {
            "type": "custom_field",
            "field": field,
            "op": op,
            "value": value if op == "equals" else "",
        }


def validate(definition: object, session: Session | None = None) -> dict[str, Any]:
    """A normalised copy of the definition, or SegmentError saying what is wrong where.

    With a session, the tags, pages and mailings named must also exist.
    """
    check = _Checker()
    if not isinstance(definition, dict):
        raise SegmentError({"": "A segment definition must be an object."})
    check.keys(definition, "", {"match", "include", "exclude"})
    match = check.choice(definition.get("match", "all"), "match", "Match", ("all", "any"))
    out: dict[str, Any] = {"match": match, "include": [], "exclude": []}
    for part in ("include", "exclude"):
        items = definition.get(part, [])
        if not isinstance(items, list):
            check.fail(part, f"{part.capitalize()} must be a list of conditions.")
            continue
        if len(items) > MAX_CONDITIONS:
            check.fail(part, f"Use at most {MAX_CONDITIONS} conditions.")
            continue
        for i, item in enumerate(items):
            normal = check.condition(item, f"{part}.{i}")
            if normal is not None:
                out[part].append(normal)
    if session is not None and not check.errors:
        _check_references(session, out, check)
    if check.errors:
        raise SegmentError(check.errors)
    return out


def _check_references(session: Session, definition: dict[str, Any], check: _Checker) -> None:
    """Every id named must exist: a deleted tag would otherwise match nobody, silently."""
    tables: dict[str, tuple[type[Tag] | type[ActionPage], str]] = {
        "tag_ids": (Tag, "tag"),
        "page_ids": (ActionPage, "action page"),
    }
    for part in ("include", "exclude"):
        for i, cond in enumerate(definition[part]):
            for key, (model, what) in tables.items():
                if key in cond:
                    found = set(session.scalars(select(model.id).where(model.id.in_(cond[key]))))
                    missing = [str(x) for x in cond[key] if x not in found]
                    if missing:
                        check.fail(f"{part}.{i}.{key}", f"No {what} with id {', '.join(missing)}.")
            if cond["type"] == "mailing" and session.get(Mailing, cond["mailing_id"]) is None:
                check.fail(f"{part}.{i}.mailing_id", f"No mailing with id {cond['mailing_id']}.")


# --- the SQL ---------------------------------------------------------------------------


def _has_tag(tag_ids: list[int]) -> ColumnElement[bool]:
    return exists().where(
        supporter_tags.c.supporter_id == Supporter.id, supporter_tags.c.tag_id.in_(tag_ids)
    )


def _tags(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    ids = cond["tag_ids"]
    if cond["mode"] == "all":
        # One semi-join per tag: each uses the (tag_id, supporter_id) index.
        return and_(*(_has_tag([tag_id]) for tag_id in ids))
    if cond["mode"] == "none":
        return not_(_has_tag(ids))
    return _has_tag(ids)


def _action(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    took = exists().where(Action.supporter_id == Supporter.id, Action.page_id.in_(cond["page_ids"]))
    return took if cond["took"] else not_(took)


def _joined(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    # Inclusive dates: from the first day's midnight up to (not including) the midnight
    # after the last day, so the column's index serves both ends.
    parts: list[ColumnElement[bool]] = []
    if cond["from"]:
        parts.append(
            Supporter.created_at >= datetime.combine(date.fromisoformat(cond["from"]), time())
        )
    if cond["to"]:
        end = datetime.combine(date.fromisoformat(cond["to"]), time()) + timedelta(days=1)
        parts.append(Supporter.created_at < end)
    return and_(*parts)


def _like_prefix(prefix: str) -> str:
    # "!" as the escape character: a backslash means different things across dialects.
    escaped = prefix.upper().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped + "%"


def _location(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if cond["country"]:
        parts.append(func.upper(Supporter.country) == cond["country"])
    if cond["postal_prefix"]:
        parts.append(
            func.upper(Supporter.postal_code).like(_like_prefix(cond["postal_prefix"]), escape="!")
        )
    return and_(*parts)


def _mailing(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    delivered = and_(
        Delivery.mailing_id == cond["mailing_id"], Delivery.supporter_id == Supporter.id
    )
    if cond["event"] == "received":
        return exists().where(delivered, Delivery.status == DeliveryStatus.SENT.value)
    # Opens count whether a person or a mail proxy fetched the pixel: both mean the
    # message reached an inbox that loads images.
    kind = "open" if cond["event"] == "opened" else "click"
    return exists().where(
        delivered, TrackingEvent.delivery_id == Delivery.id, TrackingEvent.kind == kind
    )


def _engaged(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    since = now - timedelta(days=cond["days"])
    acted = select(Action.supporter_id).where(Action.created_at >= since)
    # Machine opens (a mail proxy fetching the pixel) are not a person engaging: left out.
    tracked = (
        select(Delivery.supporter_id)
        .join(TrackingEvent, TrackingEvent.delivery_id == Delivery.id)
        .where(TrackingEvent.created_at >= since, TrackingEvent.machine.is_(False))
    )
    # Uncorrelated IN, not EXISTS: PostgreSQL hashes each list once, where an OR of
    # correlated EXISTS can become a per-row probe of deliveries and tracking events.
    return or_(Supporter.id.in_(acted), Supporter.id.in_(tracked))


def _custom_field(cond: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    value = cast(Supporter.custom_fields[cond["field"]].as_string(), String)
    if cond["op"] == "is_set":
        return and_(value.is_not(None), value != "")
    # coalesce: a missing field must compare false, not NULL, or NOT (an exclusion)
    # would leave out everyone who lacks the field.
    return func.lower(func.coalesce(value, "")) == cond["value"].lower()


_BUILDERS = {
    "tags": _tags,
    "action": _action,
    "joined": _joined,
    "location": _location,
    "mailing": _mailing,
    "engaged": _engaged,
    "custom_field": _custom_field,
}


def condition(definition: dict[str, Any], now: datetime) -> ColumnElement[bool]:
    """A WHERE clause over `Supporter` meaning the definition (validated here first).

    The caller's FROM must hold the supporters table; the subqueries correlate to it.
    """
    normal = validate(definition)
    include = [_BUILDERS[c["type"]](c, now) for c in normal["include"]]
    exclude = [_BUILDERS[c["type"]](c, now) for c in normal["exclude"]]
    if not include:
        wanted: ColumnElement[bool] = true()
    elif normal["match"] == "any":
        wanted = or_(*include)
    else:
        wanted = and_(*include)
    # NOT (a OR b) written as NOT a AND NOT b: PostgreSQL turns each top-level
    # NOT EXISTS into an anti-join, but not one buried under an OR.
    return and_(wanted, *(not_(e) for e in exclude))


def mailable(now: datetime) -> ColumnElement[bool]:
    """Subscribed and not snoozed: who a mailing may go to (before suppressions and caps)."""
    return and_(
        Supporter.status == SupporterStatus.SUBSCRIBED.value,
        or_(Supporter.snoozed_until.is_(None), Supporter.snoozed_until <= now),
    )


def tune_session(session: Session) -> None:
    """PostgreSQL settings for segment queries, for the current transaction only.

    JIT: the planner prices OR-ed subplans high enough to trigger JIT compilation,
    which cost more than the whole count (0.8 s of 1.9 s at a million supporters).
    work_mem: an IN list or EXISTS under an OR is hashed only when the hash fits in
    work_mem; past the 4 MB default (about 100,000 ids) PostgreSQL falls back to a
    per-row subplan, minutes instead of a second. Callers running condition() in
    their own statement (the send pipeline) should call this first too.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))


def count(session: Session, definition: object, now: datetime) -> SegmentCount:
    """How many supporters the definition matches, and how many of them can be mailed.

    One pass over the matching rows. Raises SegmentError for a bad definition,
    including tags, pages or mailings that do not exist.
    """
    normal = validate(definition, session)
    where = condition(normal, now)
    tune_session(session)
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((mailable(now), 1), else_=0)), 0),
        )
        .select_from(Supporter)
        .where(where)
    ).one()
    return SegmentCount(matching=int(row[0]), mailable=int(row[1]))


# --- saved segments --------------------------------------------------------------------


def can_edit(user: StaffUser) -> bool:
    return user.role in SEGMENT_EDITORS


def _require_editor(actor: StaffUser) -> None:
    if not can_edit(actor):
        raise SegmentNotAllowed("Only organizers and admins can change segments.")


@dataclass(frozen=True)
class BuilderChoices:
    """What the builder offers to pick from: (id, label) pairs."""

    tags: list[tuple[int, str]]
    pages: list[tuple[int, str]]
    mailings: list[tuple[int, str]]


def builder_choices(session: Session, limit: int = 500) -> BuilderChoices:
    tags = session.execute(select(Tag.id, Tag.name).order_by(func.lower(Tag.name)))
    pages = session.execute(
        select(ActionPage.id, ActionPage.title, ActionPage.status)
        .order_by(ActionPage.id.desc())
        .limit(limit)
    )
    mailings = session.execute(
        select(Mailing.id, Mailing.subject, Mailing.status).order_by(Mailing.id.desc()).limit(limit)
    )
    return BuilderChoices(
        tags=[(i, name) for i, name in tags],
        pages=[(i, f"{title} ({status})") for i, title, status in pages],
        mailings=[(i, f"#{i} {subject} ({status})") for i, subject, status in mailings],
    )


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(func.lower(Segment.name), Segment.id)))


def get_segment(session: Session, segment_id: int) -> Segment | None:
    return session.get(Segment, segment_id)


def segment_by_name(session: Session, name: str) -> Segment | None:
    """The saved segment with this name (surrounding spaces ignored), or None."""
    return session.scalar(select(Segment).where(Segment.name == name.strip()))


def _checked(
    session: Session, name: str, description: str, definition: object, segment: Segment | None
) -> tuple[str, str, dict[str, Any]]:
    errors: dict[str, str] = {}
    clean_name = (name or "").strip()
    if not clean_name:
        errors["name"] = "Give the segment a name."
    elif len(clean_name) > NAME_MAX:
        errors["name"] = f"The name can be at most {NAME_MAX} characters."
    else:
        same = segment_by_name(session, clean_name)
        if same is not None and (segment is None or same.id != segment.id):
            errors["name"] = f"There is already a segment called “{clean_name}”."
    clean_description = (description or "").strip()
    if len(clean_description) > 2000:
        errors["description"] = "The description can be at most 2,000 characters."
    normal: dict[str, Any] = {}
    try:
        normal = validate(definition, session)
    except SegmentError as exc:
        errors.update(exc.errors)
    if errors:
        raise SegmentError(errors)
    return clean_name, clean_description, normal


def create_segment(
    session: Session,
    *,
    name: str,
    description: str,
    definition: object,
    actor: StaffUser,
    now: datetime,
) -> Segment:
    """Save a new segment (flushed). Raises SegmentError or SegmentNotAllowed."""
    _require_editor(actor)
    clean_name, clean_description, normal = _checked(session, name, description, definition, None)
    segment = Segment(
        name=clean_name,
        description=clean_description,
        definition=normal,
        created_by_id=actor.id,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    audit(session, actor, "segment.create", "segment", segment.id, now=now)
    return segment


def update_segment(
    session: Session,
    segment: Segment,
    *,
    name: str,
    description: str,
    definition: object,
    actor: StaffUser,
    now: datetime,
) -> list[str]:
    """Change a segment; returns the names of the fields that changed (audited, not values)."""
    _require_editor(actor)
    clean_name, clean_description, normal = _checked(
        session, name, description, definition, segment
    )
    changed = [
        field
        for field, new in (
            ("name", clean_name),
            ("description", clean_description),
            ("definition", normal),
        )
        if getattr(segment, field) != new
    ]
    if changed:
        segment.name, segment.description, segment.definition = (
            clean_name,
            clean_description,
            normal,
        )
        segment.updated_at = now
        session.flush()
        audit(session, actor, "segment.update", "segment", segment.id, now=now, fields=changed)
    return changed


def delete_segment(session: Session, segment: Segment, *, actor: StaffUser, now: datetime) -> None:
    """Delete a segment no unfinished mailing is waiting to send to."""
    _require_editor(actor)
    waiting = session.scalar(
        select(func.count())
        .select_from(Mailing)
        .where(Mailing.segment_id == segment.id, Mailing.status.in_([s.value for s in UNFINISHED]))
    )
    if waiting:
        raise SegmentError(
            {
                "": f"{waiting} mailing(s) not yet sent use this segment: "
                "choose another segment for them first."
            }
        )
    audit(session, actor, "segment.delete", "segment", segment.id, now=now)
    session.delete(segment)
    session.flush()


__all__ = [
    "SegmentCount",
    "SegmentError",
    "SegmentNotAllowed",
    "condition",
    "count",
    "create_segment",
    "delete_segment",
    "get_segment",
    "list_segments",
    "mailable",
    "segment_by_name",
    "tune_session",
    "update_segment",
    "validate",
]
