"""Taking action on a page: one person, one counted action, with where it came from.

The kind-specific parts live beside this module (letters.py, events.py); this
one owns pages' public state, the generic action, attribution and referral.
Callers own the transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.actions.models import Action, ActionPage, CallReport, PageKind, PageStatus
from app.html import sanitise_html
from app.supporters import service as supporters
from app.supporters.models import Supporter

CALL_OUTCOMES = {
    "reached": "I spoke to someone",
    "voicemail": "I left a voicemail",
    "busy": "The line was busy",
}
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
RECENT_SIGNERS = 10

_markdown = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


class ActionError(ValueError):
    """The action cannot be taken, in words for a person."""


def render_markdown(text: str) -> str:
    """Staff-written Markdown as safe HTML (nh3 removes scripts, styles, handlers)."""
    return sanitise_html(_markdown.render(text or ""))


def uploads_dir(instance_path: str) -> str:
    """Where uploaded share images live."""
    return f"{instance_path}/uploads"


def is_open(page: ActionPage, now: datetime) -> bool:
    """Live, and not past its close date."""
    return page.status == PageStatus.LIVE and (page.close_at is None or page.close_at > now)


def page_by_slug(session: Session, slug: str) -> ActionPage | None:
    return session.scalar(select(ActionPage).where(ActionPage.slug == slug))


def live_pages(session: Session, now: datetime) -> list[ActionPage]:
    pages = session.scalars(
        select(ActionPage)
        .where(ActionPage.status == PageStatus.LIVE)
        .order_by(ActionPage.published_at.desc(), ActionPage.id.desc())
    ).all()
    return [p for p in pages if is_open(p, now)]


@dataclass(frozen=True)
class Attribution:
    """Where an action came from, as the request told us."""

    mailing_id: int | None = None
    referral_code: str = ""
    utm: dict[str, str] = field(default_factory=dict)
    referrer_host: str = ""


@dataclass(frozen=True)
class ActionDetails:
    """What the person typed beyond who they are; fields unused by a kind stay empty."""

    comment: str = ""
    show_publicly: bool = False
    town: str = ""
    letter_subject: str = ""
    letter_body: str = ""
    call_outcome: str = ""
    call_target_id: int | None = None


@dataclass
class ActionResult:
    action: Action
    supporter: Supporter
    created: bool  # False: this person had already acted here; nothing was double counted
    subscribed_now: bool
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific outcome (RSVP status…)


def referral_code_for(session: Session, supporter: Supporter) -> str:
    """The supporter's share code, given out on first use."""
    if supporter.referral_code:
        return supporter.referral_code
    for _ in range(5):
        code = secrets.token_urlsafe(6)
        if not session.scalar(select(Supporter.id).where(Supporter.referral_code == code)):
            supporter.referral_code = code
            session.flush()
            return code
    raise RuntimeError("could not find a free referral code")


def _source_of(attribution: Attribution, referrer: Supporter | None) -> str:
    if attribution.mailing_id is not None:
        return "mailing"
    if referrer is not None:
        return "referral"
    if attribution.utm:
        return "campaign link"
    if attribution.referrer_host:
        return "other site"
    return "direct"


def take_action(
    session: Session,
    page: ActionPage,
    person: supporters.SignupData | Supporter,
    opt_in: bool,
    details: ActionDetails,
    attribution: Attribution,
    now: datetime,
) -> ActionResult:
    """Record one person's action on a live page.

    `person` is typed-in details (a new or returning visitor) or a supporter
    recognised from a signed email link. Acting twice updates the first
    action instead of counting again. Raises ActionError for a closed page or
    an invalid choice.
    """
    if not is_open(page, now):
        raise ActionError("This page is closed and no longer takes actions.")
    if page.kind == PageKind.CALL and details.call_outcome not in CALL_OUTCOMES:
        raise ActionError("Please tell us how your call went.")
    # Every refusal comes before the first write: on SQLite a released savepoint is
    # already committed, so a later rollback would not undo it.
    if page.kind == PageKind.EVENT:
        from app.actions import events

        events.check_can_act(page, now)
    if page.kind == PageKind.LETTER:
        from app.actions import letters

        letters.letter_text(page, details)

    source = f"action page /a/{page.slug}"
    if isinstance(person, Supporter):
        supporter, subscribed_now = person, False
        if opt_in and person.status in ("unsubscribed", "not_subscribed"):
            supporters.resubscribe(session, person, source, page.opt_in_text, now)
            subscribed_now = True
    else:
        signed = supporters.signup(session, person, source, page.opt_in_text, now, opt_in=opt_in)
        supporter, subscribed_now = (
            signed.supporter,
            (signed.created and opt_in) or signed.resubscribed,
        )

    referrer = None
    if attribution.referral_code:
        referrer = session.scalar(
            select(Supporter).where(Supporter.referral_code == attribution.referral_code)
        )
        if referrer is not None and referrer.id == supporter.id:
            referrer = None  # sharing with yourself earns no credit

    action = session.scalar(
        select(Action).where(Action.page_id == page.id, Action.supporter_id == supporter.id)
    )
    created = False
    if action is None:
        action = Action(
            page_id=page.id,
            supporter_id=supporter.id,
            created_at=now,
            updated_at=now,
            referrer_id=referrer.id if referrer else None,
            mailing_id=attribution.mailing_id,
            source=_source_of(attribution, referrer),
            utm=dict(attribution.utm),
            referrer_host=attribution.referrer_host[:200],
        )
        try:
            with session.begin_nested():
                session.add(action)
                session.flush()
            created = True
        except IntegrityError:  # the same person, twice at once: the other one counts
            action = session.scalar(
                select(Action).where(Action.page_id == page.id, Action.supporter_id == supporter.id)
            )
            assert action is not None
    action.updated_at = now
    _apply_details(session, page, action, supporter, details, now)
    session.flush()
    result = ActionResult(action, supporter, created, subscribed_now)
    _kind_hooks(session, page, result, details, now)
    return result


def _apply_details(
    session: Session,
    page: ActionPage,
    action: Action,
    supporter: Supporter,
    details: ActionDetails,
    now: datetime,
) -> None:
    if page.kind == PageKind.PETITION:
        if details.comment:
            action.comment = details.comment
        action.show_publicly = details.show_publicly
        town = details.town.strip()
        action.public_name = (
            (f"{supporter.first_name}, {town}" if town else supporter.first_name)
            if details.show_publicly
            else ""
        )
    elif page.kind == PageKind.CALL:
        session.add(
            CallReport(
                action_id=action.id,
                target_id=details.call_target_id,
                outcome=details.call_outcome,
                created_at=now,
            )
        )


def _kind_hooks(
    session: Session, page: ActionPage, result: ActionResult, details: ActionDetails, now: datetime
) -> None:
    """Letters are addressed and queued; RSVPs take a place or join the waitlist."""
    if page.kind == PageKind.LETTER:
        from app.actions import letters

        letters.after_action(session, page, result, details, now)
    elif page.kind == PageKind.EVENT:
        from app.actions import events

        events.after_action(session, page, result, now)


def action_count(session: Session, page: ActionPage) -> int:
    return session.scalar(select(func.count()).where(Action.page_id == page.id)) or 0


def recent_public_signers(
    session: Session, page: ActionPage, limit: int = RECENT_SIGNERS
) -> list[tuple[str, str]]:
    """(public name, comment) of the latest signers who chose to be shown."""
    rows = session.execute(
        select(Action.public_name, Action.comment)
        .where(Action.page_id == page.id, Action.show_publicly.is_(True))
        .order_by(Action.id.desc())
        .limit(limit)
    ).all()
    return [(name, comment) for name, comment in rows]


def has_acted(session: Session, page: ActionPage, supporter: Supporter) -> bool:
    return (
        session.scalar(
            select(Action.id).where(Action.page_id == page.id, Action.supporter_id == supporter.id)
        )
        is not None
    )
