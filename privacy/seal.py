"""Rule 2: an unsubscribe option in every email.

`seal()` is the one chokepoint every outbound email passes. It refuses to
seal a message whose body lacks a visible unsubscribe link or the postal
address, returns a skip reason instead of a message for a recipient who must
not be mailed, and adds the RFC 8058 headers. Email providers accept only a
`SealedEmail`, which nothing but `seal()` can construct.
"""

from __future__ import annotations

import enum
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
class SealedEmail:
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
    _key: object = field(repr=False, compare=False, default=None)
    # A digest of the content as sealed: dataclasses.replace() copies _key, so
    # this is what tells require_sealed() that something (even `to`) changed.
    _fingerprint: str = field(repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if self._key is not _SEAL_KEY:
            raise SealError("a SealedEmail can only be made by privacy.seal.seal()")


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
    return hashlib.sha256(repr(content).encode()).hexdigest()


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
