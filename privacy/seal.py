"""Rule 2: an unsubscribe option in every email.

`seal()` is the one chokepoint every outbound email passes. It refuses to
seal a message whose body lacks a visible unsubscribe link or the postal
address, returns a skip reason instead of a message for a recipient who must
not be mailed, and adds the RFC 8058 headers. Email providers accept only a
`SealedEmail`, which nothing but `seal()` can construct.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime


class SealError(ValueError):
    """The message itself breaks the rule and must not be sent to anyone."""


class SkipReason(enum.Enum):
    """Why a recipient was not mailed; stored beside the attempt, never silent."""

    UNSUBSCRIBED = "unsubscribed"
    SNOOZED = "snoozed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"
    NOT_SUBSCRIBED = "not-subscribed"


# Supporter statuses that block all email, mapped to the reason recorded.
_BLOCKING_STATUS = {
    "unsubscribed": SkipReason.UNSUBSCRIBED,
    "bounced": SkipReason.BOUNCED,
    "complained": SkipReason.COMPLAINED,
    "erased": SkipReason.ERASED,
}


@dataclass(frozen=True)
class Recipient:
    """What the seal needs to know about who a message goes to."""

    address: str
    status: str = "subscribed"
    snoozed_until: datetime | None = None


class Purpose(enum.StrEnum):
    """Campaign email needs a subscription; transactional email is what the person asked
    for (a copy of their letter, an event ticket) and needs only that they never opted out."""

    CAMPAIGN = "campaign"
    TRANSACTIONAL = "transactional"


@dataclass(frozen=True)
class UnsubscribeLinks:
    """The recipient's own opt-out addresses."""

    page_url: str  # the visible link in the body: the preferences page
    one_click_url: str  # RFC 8058 POST target
    mailto: str = ""  # optional mailto: fallback for clients without one-click


@dataclass(frozen=True)
class Draft:
    """An email as composed, before the seal."""

    to: str
    subject: str
    text: str
    html: str | None
    sender: str
    reply_to: str | None = None
    category: str = "general"
    purpose: Purpose = Purpose.CAMPAIGN
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[tuple[str, str, bytes], ...] = ()  # (filename, mime type, data)


_SEAL_KEY = object()


@dataclass(frozen=True)
class _MadeOnlyBySeal:
    """Base of the sealed types: only this module's seal functions can construct them.

    `_key` must be the module's private sentinel. `_fingerprint` is a digest of the
    content as sealed: dataclasses.replace() copies `_key`, so the digest is what tells
    the require_* checks that something (even the address) changed afterwards.
    """

    _key: object = field(repr=False, compare=False, default=None, kw_only=True)
    _fingerprint: str = field(repr=False, compare=False, default="", kw_only=True)

    def __post_init__(self) -> None:
        if self._key is not _SEAL_KEY:
            raise SealError(f"a {type(self).__name__} can only be made by privacy.seal")


@dataclass(frozen=True)
class SealedEmail(_MadeOnlyBySeal):
    """A draft that passed the seal. Only `seal()` can make one."""

    to: str
    subject: str
    text: str
    html: str | None
    sender: str
    reply_to: str | None
    category: str
    headers: dict[str, str]
    attachments: tuple[tuple[str, str, bytes], ...]
    links: UnsubscribeLinks
    postal_address: str


def _digest(content: tuple[object, ...]) -> str:
    """A stable digest of sealed content, to notice any change made after sealing."""
    return hashlib.sha256(repr(content).encode()).hexdigest()


def _fingerprint(message: SealedEmail) -> str:
    """A digest of everything a sealed message carries."""
    content = (
        message.to,
        message.subject,
        message.text,
        message.html,
        message.sender,
        message.reply_to,
        message.category,
        sorted(message.headers.items()),
        message.attachments,
        message.links,
        message.postal_address,
    )
    return _digest(content)


def skip_reason(
    recipient: Recipient, now: datetime, purpose: Purpose = Purpose.CAMPAIGN
) -> SkipReason | None:
    """The reason this recipient must not be mailed now, or None if they may be.

    Unsubscribed, snoozed, bounced, complained and erased block every email;
    never having opted in blocks campaign email only.
    """
    if reason := _BLOCKING_STATUS.get(recipient.status):
        return reason
    if recipient.status == "not_subscribed" and purpose is Purpose.CAMPAIGN:
        return SkipReason.NOT_SUBSCRIBED
    if recipient.snoozed_until is not None and recipient.snoozed_until > now:
        return SkipReason.SNOOZED
    return None


def _visible_text(fragment: str) -> str:
    """The text of an HTML fragment as a reader sees it: no tags, entities decoded,
    without spaces (&nbsp; included) or invisible characters such as zero-width spaces."""
    text = html.unescape(re.sub(r"<[^>]+>", "", fragment))
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Cf")


def _has_visible_link(body_html: str, url: str) -> bool:
    """An <a> element pointing at url with some visible text."""
    for match in re.finditer(r"<a\b[^>]*>(.*?)</a>", body_html, re.I | re.S):
        tag = match.group(0)
        hrefs = re.findall(r"""href\s*=\s*["']([^"']*)["']""", tag, re.I)
        text = _visible_text(match.group(1))
        if text and any(html.unescape(h) == url for h in hrefs):
            return True
    return False


def _normalise_space(text: str) -> str:
    return " ".join(text.split())


def check_body(
    text: str, body_html: str | None, links: UnsubscribeLinks, postal_address: str
) -> None:
    """Raise SealError unless every part carries the unsubscribe link and postal address."""
    if not postal_address.strip():
        raise SealError("no postal address is configured (ORG_POSTAL_ADDRESS)")
    address = _normalise_space(postal_address)
    if not links.page_url or links.page_url not in text:
        raise SealError("the plain-text part has no unsubscribe link")
    if address not in _normalise_space(text):
        raise SealError("the plain-text part has no postal address")
    if body_html is not None:
        if not _has_visible_link(body_html, links.page_url):
            raise SealError("the HTML part has no visible unsubscribe link")
        visible = _normalise_space(html.unescape(re.sub(r"<[^>]+>", " ", body_html)))
        if address not in visible:
            raise SealError("the HTML part has no postal address")


def seal(
    draft: Draft,
    recipient: Recipient,
    links: UnsubscribeLinks,
    postal_address: str,
    now: datetime,
) -> SealedEmail | SkipReason:
    """Seal a draft for sending, or say why this recipient must be skipped.

    Raises SealError when the message breaks the rule for everyone (missing
    unsubscribe link or postal address, or addressed to someone else).
    """
    if draft.to.strip().lower() != recipient.address.strip().lower():
        raise SealError("the draft is addressed to someone other than the recipient checked")
    check_body(draft.text, draft.html, links, postal_address)
    if reason := skip_reason(recipient, now, draft.purpose):
        return reason
    if not links.one_click_url.startswith(("https://", "http://")):
        raise SealError("the one-click unsubscribe target must be an http(s) URL")
    targets = [f"<{links.one_click_url}>"]
    if links.mailto:
        targets.append(f"<{links.mailto}>")
    headers = dict(draft.headers)
    headers["List-Unsubscribe"] = ", ".join(targets)
    headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    sealed = SealedEmail(
        to=draft.to,
        subject=draft.subject,
        text=draft.text,
        html=draft.html,
        sender=draft.sender,
        reply_to=draft.reply_to,
        category=draft.category,
        headers=headers,
        attachments=draft.attachments,
        links=links,
        postal_address=postal_address,
        _key=_SEAL_KEY,
    )
    object.__setattr__(sealed, "_fingerprint", _fingerprint(sealed))
    return sealed


def require_sealed(message: object) -> SealedEmail:
    """Providers call this first: anything that did not pass the seal is refused.

    The message must be unchanged since it was sealed (not re-addressed, not
    edited with dataclasses.replace, no header removed), and the checks run
    again here as well.
    """
    if not isinstance(message, SealedEmail) or message._key is not _SEAL_KEY:
        raise SealError("refusing to send a message that did not pass privacy.seal")
    if message._fingerprint != _fingerprint(message):
        raise SealError("refusing to send a message that was changed after it was sealed")
    check_body(message.text, message.html, message.links, message.postal_address)
    expected = f"<{message.links.one_click_url}>"
    if not message.headers.get("List-Unsubscribe", "").startswith(expected):
        raise SealError("refusing to send a message without its List-Unsubscribe header")
    if message.headers.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
        raise SealError("refusing to send a message without List-Unsubscribe-Post")
    return message


# --- Bulk sealing: one body for many recipients --------------------------------------
#
# A mailing is composed once with per-recipient placeholders (SendGrid
# substitution tags) and sent in chunks of up to 1,000 personalizations. The
# body is checked once by `seal_bulk()`; each recipient is then checked by
# `seal_recipient()` without rendering the body again. The rule still holds
# for every message: the body can only change at the placeholders, a
# placeholder can never hide the postal address or the unsubscribe link's
# text, and the unsubscribe placeholder must map to that recipient's own page.

UNSUBSCRIBE_PLACEHOLDER = "-unsubscribe_url-"
# What a placeholder looks like: a value shaped like one (a name "-click_1-") must not be
# substituted into a body, so callers check values against this too.
PLACEHOLDER = re.compile(r"-[a-z][a-z0-9_]*-")
_PLACEHOLDER_EXACT = re.compile(r"-[a-z][a-z0-9_]*-\Z")
# Substituted values land in the HTML part verbatim: markup could hide the rest of the body.
_FORBIDDEN_IN_VALUE = re.compile(r"[<>\r\n\x00]")


@dataclass(frozen=True)
class BulkDraft:
    """A mailing as composed, with placeholders such as -first_name- and -unsubscribe_url-."""

    subject: str
    text: str
    html: str | None
    sender: str
    reply_to: str | None = None
    category: str = "mailing"


@dataclass(frozen=True)
class SealedBulk(_MadeOnlyBySeal):
    """A bulk body that passed the seal. Only `seal_bulk()` can make one."""

    subject: str
    text: str
    html: str | None
    sender: str
    reply_to: str | None
    category: str
    postal_address: str


@dataclass(frozen=True)
class SealedRecipient(_MadeOnlyBySeal):
    """One recipient of a sealed bulk body. Only `seal_recipient()` can make one."""

    to: str
    substitutions: dict[str, str]
    headers: dict[str, str]
    links: UnsubscribeLinks
    bulk_fingerprint: str


def _bulk_fingerprint(bulk: SealedBulk) -> str:
    content = (
        bulk.subject,
        bulk.text,
        bulk.html,
        bulk.sender,
        bulk.reply_to,
        bulk.category,
        bulk.postal_address,
    )
    return _digest(content)


def _recipient_fingerprint(recipient: SealedRecipient) -> str:
    content = (
        recipient.to,
        sorted(recipient.substitutions.items()),
        sorted(recipient.headers.items()),
        recipient.links,
        recipient.bulk_fingerprint,
    )
    return _digest(content)


def _without_placeholders(body: str) -> str:
    """The body as it reads if every placeholder but the unsubscribe one became empty.

    Whatever a recipient's values are, the checks made on this version still hold.
    """
    return PLACEHOLDER.sub(
        lambda m: m.group(0) if m.group(0) == UNSUBSCRIBE_PLACEHOLDER else "", body
    )


def _check_bulk_body(text: str, body_html: str | None, postal_address: str) -> None:
    if PLACEHOLDER.search(postal_address):
        raise SealError("the postal address must not contain a placeholder")
    placeholder_links = UnsubscribeLinks(page_url=UNSUBSCRIBE_PLACEHOLDER, one_click_url="")
    check_body(
        _without_placeholders(text),
        None if body_html is None else _without_placeholders(body_html),
        placeholder_links,
        postal_address,
    )


def seal_bulk(draft: BulkDraft, postal_address: str) -> SealedBulk:
    """Seal a bulk body once for every recipient of a mailing.

    Raises SealError unless the text part and the HTML part (as the href of a
    visible <a>) each carry the -unsubscribe_url- placeholder, and each carries
    the postal address, whatever the other placeholders are replaced with.
    """
    _check_bulk_body(draft.text, draft.html, postal_address)
    if UNSUBSCRIBE_PLACEHOLDER in draft.subject:
        raise SealError("the subject must not carry the unsubscribe placeholder")
    bulk = SealedBulk(
        subject=draft.subject,
        text=draft.text,
        html=draft.html,
        sender=draft.sender,
        reply_to=draft.reply_to,
        category=draft.category,
        postal_address=postal_address,
        _key=_SEAL_KEY,
    )
    object.__setattr__(bulk, "_fingerprint", _bulk_fingerprint(bulk))
    return bulk


def _require_unchanged_bulk(bulk: object) -> SealedBulk:
    """A body made by seal_bulk() and unchanged since: its content is what passed the checks.

    `seal_recipient()` runs for each of a million recipients, so it relies on this
    digest rather than re-reading the body; providers re-run the checks once per
    chunk in `require_sealed_bulk()`.
    """
    if not isinstance(bulk, SealedBulk) or bulk._key is not _SEAL_KEY:
        raise SealError("refusing to send a bulk body that did not pass privacy.seal")
    if bulk._fingerprint != _bulk_fingerprint(bulk):
        raise SealError("refusing to send a bulk body that was changed after it was sealed")
    return bulk


def _require_bulk(bulk: object) -> SealedBulk:
    sealed_bulk = _require_unchanged_bulk(bulk)
    _check_bulk_body(sealed_bulk.text, sealed_bulk.html, sealed_bulk.postal_address)
    return sealed_bulk


@functools.lru_cache(maxsize=256)
def _placeholder_keys(keys: tuple[object, ...]) -> re.Pattern[str]:
    """Check the placeholder names once per set of names (every recipient of a chunk has
    the same), and return a pattern that finds any of them inside a value."""
    for key in keys:
        if not isinstance(key, str) or not _PLACEHOLDER_EXACT.match(key):
            raise SealError(f"{key!r} is not a placeholder such as -first_name-")
    return re.compile("|".join(re.escape(str(k)) for k in sorted(keys, key=str)))


def _check_substitutions(substitutions: dict[str, str], links: UnsubscribeLinks) -> None:
    if not links.page_url:
        raise SealError("the recipient has no unsubscribe page")
    if substitutions.get(UNSUBSCRIBE_PLACEHOLDER) != links.page_url:
        raise SealError("the unsubscribe placeholder must map to the recipient's own page")
    placeholders = _placeholder_keys(tuple(substitutions))
    for key, value in substitutions.items():
        if not isinstance(value, str) or _FORBIDDEN_IN_VALUE.search(value):
            raise SealError(f"the value for {key} must be plain text on one line")
        if placeholders.search(value):
            raise SealError(f"the value for {key} contains a placeholder")


def _check_address(address: str) -> None:
    if "@" not in address or any(c in address for c in "\r\n\x00<>,;"):
        raise SealError("the recipient address is not a single email address")


def seal_recipient(
    bulk: SealedBulk,
    recipient: Recipient,
    substitutions: dict[str, str],
    links: UnsubscribeLinks,
    now: datetime,
) -> SealedRecipient | SkipReason:
    """Seal one recipient of a sealed bulk body, or say why they must be skipped.

    Skip reasons are exactly those of `seal()` for campaign email. Raises
    SealError when the substitutions could break the rule (the unsubscribe
    placeholder not mapped to links.page_url, a value carrying markup or
    another placeholder) or the one-click target is not http(s).
    """
    sealed_bulk = _require_unchanged_bulk(bulk)
    _check_address(recipient.address)
    _check_substitutions(substitutions, links)
    if reason := skip_reason(recipient, now, Purpose.CAMPAIGN):
        return reason
    if not links.one_click_url.startswith(("https://", "http://")):
        raise SealError("the one-click unsubscribe target must be an http(s) URL")
    targets = [f"<{links.one_click_url}>"]
    if links.mailto:
        targets.append(f"<{links.mailto}>")
    headers = {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    sealed = SealedRecipient(
        to=recipient.address,
        substitutions=dict(substitutions),
        headers=headers,
        links=links,
        bulk_fingerprint=sealed_bulk._fingerprint,
        _key=_SEAL_KEY,
    )
    object.__setattr__(sealed, "_fingerprint", _recipient_fingerprint(sealed))
    return sealed


def require_sealed_bulk(
    bulk: object, recipients: object
) -> tuple[SealedBulk, list[SealedRecipient]]:
    """Providers call this first: the body and every recipient must have passed the seal,
    unchanged since, and each recipient must have been sealed for this very body."""
    sealed_bulk = _require_bulk(bulk)
    if not isinstance(recipients, list | tuple):
        raise SealError("recipients must be a list of SealedRecipient")
    checked: list[SealedRecipient] = []
    for recipient in recipients:
        if not isinstance(recipient, SealedRecipient) or recipient._key is not _SEAL_KEY:
            raise SealError("refusing to send to a recipient who did not pass privacy.seal")
        if recipient._fingerprint != _recipient_fingerprint(recipient):
            raise SealError("refusing to send to a recipient changed after sealing")
        if recipient.bulk_fingerprint != sealed_bulk._fingerprint:
            raise SealError("refusing to send: the recipient was sealed for another body")
        _check_address(recipient.to)
        _check_substitutions(recipient.substitutions, recipient.links)
        expected = f"<{recipient.links.one_click_url}>"
        if not recipient.headers.get("List-Unsubscribe", "").startswith(expected):
            raise SealError("refusing to send without the List-Unsubscribe header")
        if recipient.headers.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
            raise SealError("refusing to send without List-Unsubscribe-Post")
        checked.append(recipient)
    return sealed_bulk, checked


def render_recipient(bulk: SealedBulk, recipient: SealedRecipient) -> SealedEmail:
    """The one message a recipient of a bulk body gets, for providers that send one at a
    time (outbox, SMTP): placeholders replaced, checked again as a single email."""
    sealed_bulk, [checked] = require_sealed_bulk(bulk, [recipient])
    subs = checked.substitutions
    pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True)))

    def fill(body: str) -> str:
        return pattern.sub(lambda m: subs[m.group(0)], body)

    text = fill(sealed_bulk.text)
    body_html = None if sealed_bulk.html is None else fill(sealed_bulk.html)
    check_body(text, body_html, checked.links, sealed_bulk.postal_address)
    message = SealedEmail(
        to=checked.to,
        subject=fill(sealed_bulk.subject),
        text=text,
        html=body_html,
        sender=sealed_bulk.sender,
        reply_to=sealed_bulk.reply_to,
        category=sealed_bulk.category,
        headers=dict(checked.headers),
        attachments=(),
        links=checked.links,
        postal_address=sealed_bulk.postal_address,
        _key=_SEAL_KEY,
    )
    object.__setattr__(message, "_fingerprint", _fingerprint(message))
    return message
