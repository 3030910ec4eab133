"""Building action pages: create, update, publish, close; share images; the staff page list.

Validation here is the business rules (a free, well-formed slug; what each kind
needs before it can go live; an image that really is an image). Forms only parse
types. Errors come back keyed by form field name, so a view can put each message
beside its field. Callers own the transaction.

Kind-specific settings live in `ActionPage.settings`, keyed by the form's field names:

- letter: letter_subject, letter_body, letter_editable (none/body/all),
  letter_max_length (int), letter_delivery (each/digest), target_mode (fixed/match);
  fixed targets are the page's PageTarget rows.
- call: call_script (Markdown); targets are the page's PageTarget rows.
- event: starts_at and ends_at ("YYYY-MM-DDTHH:MM", wall-clock time in `timezone`),
  timezone (an IANA name), venue, online_url (https), capacity (int, or None for no limit).
"""

from __future__ import annotations

import functools
import re
import secrets
import zoneinfo
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.actions.models import Action, ActionPage, PageKind, PageStatus, Target
from app.actions.service import is_open
from app.staff.models import Role, StaffUser
from app.staff.service import audit

# Who may create and edit pages, and who may put one live. Kept apart so that a
# role that drafts but may not publish can be added without touching the views.
PAGE_EDITORS = (Role.ADMIN, Role.ORGANIZER)
PAGE_PUBLISHERS = (Role.ADMIN, Role.ORGANIZER)

SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_SLUG = 80
MAX_IMAGE_BYTES = 2 * 1024 * 1024
STORED_IMAGE_RE = re.compile(r"[0-9a-f]{32}\.(png|jpg|webp|gif)")
LETTER_EDITABLE = ("none", "body", "all")
LETTER_DELIVERY = ("each", "digest")
TARGET_MODES = ("fixed", "match")
MAX_LETTER_SUBJECT = 200  # what the public letter form accepts
DEFAULT_LETTER_MAX = 5000

KIND_SETTINGS: dict[str, tuple[str, ...]] = {
    PageKind.LETTER: (
        "letter_subject",
        "letter_body",
        "letter_editable",
        "letter_max_length",
        "letter_delivery",
        "target_mode",
    ),
    PageKind.CALL: ("call_script",),
    PageKind.EVENT: ("starts_at", "ends_at", "timezone", "venue", "online_url", "capacity"),
}
MANAGED_SETTINGS = frozenset(k for keys in KIND_SETTINGS.values() for k in keys)

# Columns staff edit, in form order; audit entries name these (never their contents).
EDITABLE_COLUMNS = (
    "kind",
    "title",
    "slug",
    "body_md",
    "share_image",
    "share_image_alt",
    "goal",
    "status",
    "close_at",
    "thank_you_md",
    "next_page_id",
    "share_text",
    "hashtag",
    "opt_in_default",
    "opt_in_text",
)


class PageInvalid(ValueError):
    """The page cannot be saved as given; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class NotAllowed(PermissionError):
    """This staff member's role may not do that."""


@dataclass(frozen=True)
class PageData:
    """Everything the builder form says about a page, already parsed into types."""

    kind: str
    title: str
    slug: str
    body_md: str = ""
    # None keeps the page's current image, "" removes it, a stored name replaces it.
    share_image: str | None = None
    share_image_alt: str = ""
    goal: int | None = None
    status: str = PageStatus.DRAFT
    close_at: datetime | None = None
    thank_you_md: str = ""
    next_page_id: int | None = None
    share_text: str = ""
    hashtag: str = ""
    opt_in_default: bool = False
    opt_in_text: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    target_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PageRow:
    """One line of the staff page list."""

    page: ActionPage
    actions: int
    open_now: bool


def can_edit(user: StaffUser) -> bool:
    """May create and change pages."""
    return user.role in PAGE_EDITORS


def can_publish(user: StaffUser) -> bool:
    """May put a page live."""
    return user.role in PAGE_PUBLISHERS


# --- share images -----------------------------------------------------------------------


def image_extension(data: bytes) -> str | None:
    """The file extension for PNG, JPEG, WebP or GIF bytes (by magic number), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(data: bytes) -> str:
    """The extension for an acceptable share image; raises PageInvalid otherwise."""
    if len(data) > MAX_IMAGE_BYTES:
        raise PageInvalid(
            {"share_image": "The image is larger than 2 MB. Please choose a smaller one."}
        )
    ext = image_extension(data)
    if ext is None:
        raise PageInvalid(
            {
                "share_image": "That file is not a PNG, JPEG, WebP or GIF image. "
                "Please choose an image file."
            }
        )
    return ext


def store_image(directory: str, data: bytes) -> str:
    """Save a checked image under a random name of ours and return the name."""
    ext = check_image(data)
    name = f"{secrets.token_hex(16)}.{ext}"
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return name


def is_stored_image(directory: str, name: str) -> bool:
    """True for a name store_image gave out whose file exists (never a path from outside)."""
    return bool(STORED_IMAGE_RE.fullmatch(name)) and (Path(directory) / name).is_file()


# --- validation -------------------------------------------------------------------------


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_time_zone(name: str) -> bool:
    """An IANA time zone name this system knows, such as Europe/Berlin."""
    return name in _time_zones()


def parse_local(value: object) -> datetime | None:
    """A stored "YYYY-MM-DDTHH:MM" wall-clock time as a naive datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M")
    except ValueError:
        return None


def _check_common(
    session: Session, data: PageData, page: ActionPage | None, now: datetime
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if data.kind not in {k.value for k in PageKind}:
        errors["kind"] = "Please choose what kind of page this is."
    if not data.title.strip():
        errors["title"] = "Please give the page a title."
    if not SLUG_RE.fullmatch(data.slug) or len(data.slug) > MAX_SLUG:
        errors["slug"] = (
            f"Use up to {MAX_SLUG} lowercase letters, digits and single hyphens, "
            "for example stop-the-killing."
        )
    elif page is not None and page.published_at is not None and data.slug != page.slug:
        errors["slug"] = (
            f"This page has been live at /a/{page.slug}, and links to it are out there: "
            "its address can no longer change."
        )
    else:
        clash = session.scalar(select(ActionPage.id).where(ActionPage.slug == data.slug))
        if clash is not None and (page is None or clash != page.id):
            errors["slug"] = f"Another page already uses /a/{data.slug}. Please choose another."
    if data.status not in {s.value for s in PageStatus}:
        errors["status"] = "Please choose draft, live or closed."
    elif data.status == PageStatus.LIVE and data.close_at is not None and data.close_at <= now:
        errors["close_at"] = (
            "That close date has passed, so the page would be closed at once. "
            "Choose a later date, leave it empty, or set the status to Closed."
        )
    if data.goal is not None and data.goal < 1:
        errors["goal"] = "The goal must be a whole number above zero, or empty."
    if data.next_page_id is not None:
        if page is not None and data.next_page_id == page.id:
            errors["next_page_id"] = "The next step must be another page."
        elif session.get(ActionPage, data.next_page_id) is None:
            errors["next_page_id"] = "That page no longer exists. Please choose another."
    if not data.opt_in_text.strip():
        errors["opt_in_text"] = "Please write the email opt-in text people will see."
    has_image = data.share_image or (data.share_image is None and page and page.share_image)
    if has_image and not data.share_image_alt.strip():
        errors["share_image_alt"] = (
            "Please describe the image for people who cannot see it (alt text)."
        )
    return errors


def _check_letter(data: PageData) -> dict[str, str]:
    s, errors = data.settings, {}
    subject = str(s.get("letter_subject") or "").strip()
    body = str(s.get("letter_body") or "").strip()
    if not subject or len(subject) > MAX_LETTER_SUBJECT:
        errors["letter_subject"] = (
            f"Please write the letter's subject, up to {MAX_LETTER_SUBJECT} characters."
        )
    if not body:
        errors["letter_body"] = "Please write the letter people will send."
    if s.get("letter_editable") not in LETTER_EDITABLE:
        errors["letter_editable"] = "Please choose what signers may change."
    if s.get("letter_delivery") not in LETTER_DELIVERY:
        errors["letter_delivery"] = "Please choose one email per letter or a daily digest."
    if s.get("target_mode") not in TARGET_MODES:
        errors["target_mode"] = "Please choose fixed targets or matching by postal code."
    max_length = s.get("letter_max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        errors["letter_max_length"] = "The maximum length must be a whole number above zero."
    elif body and len(body) > (max_length or DEFAULT_LETTER_MAX):
        errors["letter_max_length"] = (
            f"The letter is {len(body):,} characters, longer than the maximum length "
            f"of {(max_length or DEFAULT_LETTER_MAX):,}: signers could not send it."
        )
    if data.status == PageStatus.LIVE and s.get("target_mode") == "fixed" and not data.target_ids:
        errors["target_ids"] = "A live letter page with fixed targets needs at least one target."
    return errors


def _check_call(data: PageData) -> dict[str, str]:
    errors = {}
    if not str(data.settings.get("call_script") or "").strip():
        errors["call_script"] = "Please write a short script for callers."
    if data.status == PageStatus.LIVE and not data.target_ids:
        errors["target_ids"] = "A live call page needs at least one office to call."
    return errors


def _check_event(data: PageData) -> dict[str, str]:
    s, errors = data.settings, {}
    starts, ends = parse_local(s.get("starts_at")), parse_local(s.get("ends_at"))
    if starts is None:
        errors["starts_at"] = "Please give the date and time the event starts."
    if s.get("ends_at") and ends is None:
        errors["ends_at"] = "Please give the end as a date and time."
    elif starts and ends and ends <= starts:
        errors["ends_at"] = "The event must end after it starts."
    if not is_time_zone(str(s.get("timezone") or "")):
        errors["timezone"] = (
            "Please give a time zone by its IANA name, such as America/New_York or Europe/Berlin."
        )
    url = str(s.get("online_url") or "")
    if url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
            errors["online_url"] = "The online link must be a full https:// address."
    if not url and not str(s.get("venue") or "").strip():
        errors["venue"] = "Please give a venue, an online link, or both."
    capacity = s.get("capacity")
    if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
        errors["capacity"] = "Capacity must be a whole number above zero, or empty for no limit."
    return errors


def validate(
    session: Session, data: PageData, page: ActionPage | None, now: datetime
) -> dict[str, str]:
    """Every reason this data cannot be saved (on `page`, or as a new page); empty if fine."""
    errors = _check_common(session, data, page, now)
    if data.kind == PageKind.LETTER:
        errors.update(_check_letter(data))
    elif data.kind == PageKind.CALL:
        errors.update(_check_call(data))
    elif data.kind == PageKind.EVENT:
        errors.update(_check_event(data))
    if data.target_ids:
        found = session.scalars(select(Target.id).where(Target.id.in_(data.target_ids))).all()
        if len(set(found)) != len(set(data.target_ids)):
            errors["target_ids"] = "One of those targets no longer exists. Please choose again."
    return errors


# --- saving -----------------------------------------------------------------------------


def _kind_settings(kind: str, settings: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """This kind's settings, plus keys the builder does not manage (other features' own)."""
    kept = {k: v for k, v in old.items() if k not in MANAGED_SETTINGS}
    kept.update({k: settings.get(k) for k in KIND_SETTINGS.get(kind, ())})
    return kept


def _target_ids_for(data: PageData) -> tuple[int, ...]:
    if data.kind == PageKind.CALL or (
        data.kind == PageKind.LETTER and data.settings.get("target_mode") == "fixed"
    ):
        return tuple(sorted(set(data.target_ids)))
    return ()


def _apply(session: Session, page: ActionPage, data: PageData) -> list[str]:
    """Copy the data onto the page; the names of the fields that changed."""
    changed = []
    values: dict[str, Any] = {
        "kind": data.kind,
        "title": data.title.strip(),
        "slug": data.slug,
        "body_md": data.body_md,
        "share_image": page.share_image if data.share_image is None else data.share_image,
        "share_image_alt": data.share_image_alt.strip(),
        "goal": data.goal,
        "status": data.status,
        "close_at": data.close_at,
        "thank_you_md": data.thank_you_md,
        "next_page_id": data.next_page_id,
        "share_text": data.share_text.strip(),
        "hashtag": data.hashtag.strip().lstrip("#"),
        "opt_in_default": data.opt_in_default,
        "opt_in_text": data.opt_in_text.strip(),
    }
    for name in EDITABLE_COLUMNS:
        if getattr(page, name) != values[name]:
            setattr(page, name, values[name])
            changed.append(name)
    old_settings = dict(page.settings or {})
    new_settings = _kind_settings(data.kind, data.settings, old_settings)
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            changed.append(f"settings.{key}")
    if new_settings != old_settings:
        page.settings = new_settings
    target_ids = _target_ids_for(data)
    if tuple(sorted(t.id for t in page.targets)) != target_ids:
        page.targets = (
            list(session.scalars(select(Target).where(Target.id.in_(target_ids))))
            if target_ids
            else []
        )
        changed.append("targets")
    return changed


def _require_role(actor: StaffUser, roles: tuple[Role, ...], what: str) -> None:
    if actor.role not in roles:
        raise NotAllowed(f"Your role may not {what}.")


def _flush_slug(session: Session, page: ActionPage) -> None:
    """Flush, turning a slug taken at the same moment by someone else into a message."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise PageInvalid(
            {"slug": f"Another page already uses /a/{page.slug}. Please choose another."}
        ) from None


def _audit_status(
    session: Session, actor: StaffUser, page: ActionPage, before: str | None, now: datetime
) -> None:
    if page.status == before:
        return
    if page.status == PageStatus.LIVE:
        audit(session, actor, "page.publish", "action_page", page.id, now=now, previous=before)
    elif page.status == PageStatus.CLOSED:
        audit(session, actor, "page.close", "action_page", page.id, now=now, previous=before)


def create_page(session: Session, data: PageData, actor: StaffUser, now: datetime) -> ActionPage:
    """Create a page; raises NotAllowed or PageInvalid (with every problem at once)."""
    _require_role(actor, PAGE_EDITORS, "create pages")
    if data.status == PageStatus.LIVE:
        _require_role(actor, PAGE_PUBLISHERS, "publish pages")
    if errors := validate(session, data, None, now):
        raise PageInvalid(errors)
    page = ActionPage(settings={}, created_at=now, updated_at=now, share_image="")
    session.add(page)
    changed = _apply(session, page, data)
    if page.status == PageStatus.LIVE:
        page.published_at = now
    _flush_slug(session, page)
    audit(session, actor, "page.create", "action_page", page.id, now=now, fields=changed)
    _audit_status(session, actor, page, PageStatus.DRAFT, now)
    return page


def update_page(
    session: Session, page: ActionPage, data: PageData, actor: StaffUser, now: datetime
) -> list[str]:
    """Change a page; returns the changed field names. Raises NotAllowed or PageInvalid."""
    _require_role(actor, PAGE_EDITORS, "edit pages")
    if data.status == PageStatus.LIVE and page.status != PageStatus.LIVE:
        _require_role(actor, PAGE_PUBLISHERS, "publish pages")
    if errors := validate(session, data, page, now):
        raise PageInvalid(errors)
    before = page.status
    changed = _apply(session, page, data)
    if not changed:
        return []
    page.updated_at = now
    if page.status == PageStatus.LIVE and page.published_at is None:
        page.published_at = now
    _flush_slug(session, page)
    audit(session, actor, "page.update", "action_page", page.id, now=now, fields=changed)
    _audit_status(session, actor, page, before, now)
    return changed


def data_of(page: ActionPage) -> PageData:
    """The page as builder data (for publishing or closing through the same rules)."""
    return PageData(
        kind=page.kind,
        title=page.title,
        slug=page.slug,
        body_md=page.body_md,
        share_image=None,
        share_image_alt=page.share_image_alt,
        goal=page.goal,
        status=page.status,
        close_at=page.close_at,
        thank_you_md=page.thank_you_md,
        next_page_id=page.next_page_id,
        share_text=page.share_text,
        hashtag=page.hashtag,
        opt_in_default=page.opt_in_default,
        opt_in_text=page.opt_in_text,
        settings=dict(page.settings or {}),
        target_ids=tuple(t.id for t in page.targets),
    )


def publish(session: Session, page: ActionPage, actor: StaffUser, now: datetime) -> None:
    """Put the page live. Raises NotAllowed, or PageInvalid when it is not ready."""
    _require_role(actor, PAGE_PUBLISHERS, "publish pages")
    if page.status == PageStatus.LIVE:
        return
    if errors := validate(session, replace(data_of(page), status=PageStatus.LIVE), page, now):
        raise PageInvalid(errors)
    before = page.status
    page.status = PageStatus.LIVE
    page.updated_at = now
    if page.published_at is None:
        page.published_at = now
    session.flush()
    _audit_status(session, actor, page, before, now)


def close(session: Session, page: ActionPage, actor: StaffUser, now: datetime) -> None:
    """Close the page: it stops taking actions and offers its next step instead."""
    _require_role(actor, PAGE_EDITORS, "close pages")
    if page.status == PageStatus.CLOSED:
        return
    before = page.status
    page.status = PageStatus.CLOSED
    page.updated_at = now
    session.flush()
    _audit_status(session, actor, page, before, now)


# --- lists for the staff pages ----------------------------------------------------------


def list_pages(session: Session, now: datetime) -> list[PageRow]:
    """Every page, newest first, with its action count (one grouped query)."""
    counts = select(Action.page_id, func.count().label("n")).group_by(Action.page_id).subquery()
    rows = session.execute(
        select(ActionPage, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.page_id == ActionPage.id)
        .order_by(ActionPage.id.desc())
    ).all()
    return [PageRow(page, int(n), is_open(page, now)) for page, n in rows]


def next_step_choices(session: Session, page: ActionPage | None) -> list[tuple[str, str]]:
    """(id, label) of the pages this one may point to next."""
    query = select(ActionPage.id, ActionPage.title, ActionPage.status).order_by(ActionPage.title)
    if page is not None and page.id is not None:
        query = query.where(ActionPage.id != page.id)
    return [(str(pid), f"{title} ({status})") for pid, title, status in session.execute(query)]


def target_choices(session: Session) -> list[tuple[int, str]]:
    """(id, label) of every target, for the letter and call target lists."""
    rows = session.execute(
        select(Target.id, Target.name, Target.title, Target.region, Target.opted_out_at).order_by(
            Target.name
        )
    )
    choices = []
    for tid, name, title, region, opted_out in rows:
        label = ", ".join(p for p in (name, title) if p)
        if region:
            label += f" ({region})"
        if opted_out is not None:
            label += " — asked not to receive letters"
        choices.append((tid, label))
    return choices
