"""Rule 2: the outbound-email seal refuses anything without a way out, and skips who must not be
mailed."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta

import pytest

from privacy.seal import (
    Draft,
    Recipient,
    SealedEmail,
    SealError,
    SkipReason,
    UnsubscribeLinks,
    require_sealed,
    seal,
)

NOW = datetime(2026, 6, 1, 12, 0, 0)
ADDRESS = "Groundswell, 100 Example Street, Springfield, ST 00000, USA"
TO = "ada@example.org"
PAGE = "https://act.example.org/u/tok123"
LINKS = UnsubscribeLinks(
    page_url=PAGE,
    one_click_url="https://act.example.org/u/tok123/one-click",
    mailto="mailto:unsubscribe@example.org?subject=unsubscribe%20tok123",
)
TEXT = f"Hello Ada,\n\nPlease act.\n\n--\nUnsubscribe or take a break: {PAGE}\n{ADDRESS}\n"
HTML = (
    "<html><body><p>Hello Ada,</p><p>Please act.</p>"
    f'<p><a href="{PAGE}">Unsubscribe or take a break</a></p>'
    f"<p>{ADDRESS}</p></body></html>"
)


def draft(**changes) -> Draft:
    values = {
        "to": TO,
        "subject": "Act now",
        "text": TEXT,
        "html": HTML,
        "sender": "Groundswell <alerts@example.org>",
    }
    values.update(changes)
    return Draft(**values)


def sealed(**changes) -> SealedEmail:
    result = seal(draft(**changes), Recipient(TO), LINKS, ADDRESS, NOW)
    assert isinstance(result, SealedEmail)
    return result


# --- a good message ---------------------------------------------------------


def test_good_message_is_sealed_and_passes_the_provider_check():
    message = sealed()
    assert require_sealed(message) is message
    assert message.to == TO
    assert message.text == TEXT and message.html == HTML


def test_text_only_message_is_sealed():
    assert require_sealed(sealed(html=None)).html is None


def test_rfc_8058_headers_are_added():
    headers = sealed().headers
    assert headers["List-Unsubscribe"] == (f"<{LINKS.one_click_url}>, <{LINKS.mailto}>")
    assert headers["List-Unsubscribe"].startswith("<https://")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_a_mailto_the_header_holds_the_one_click_url_only():
    links = dataclasses.replace(LINKS, mailto="")
    result = seal(draft(), Recipient(TO), links, ADDRESS, NOW)
    assert isinstance(result, SealedEmail)
    assert result.headers["List-Unsubscribe"] == f"<{links.one_click_url}>"
    assert result.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_draft_cannot_preset_its_own_unsubscribe_headers():
    message = sealed(
        headers={
            "List-Unsubscribe": "<https://elsewhere.example/unsub>",
            "List-Unsubscribe-Post": "nope",
            "X-Campaign": "42",
        }
    )
    assert message.headers["List-Unsubscribe"].startswith(f"<{LINKS.one_click_url}>")
    assert "elsewhere" not in message.headers["List-Unsubscribe"]
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.headers["X-Campaign"] == "42"


@pytest.mark.parametrize("target", ["", "javascript:alert(1)", "/u/tok123/one-click", "ftp://x"])
def test_one_click_target_must_be_an_http_url(target):
    links = dataclasses.replace(LINKS, one_click_url=target)
    with pytest.raises(SealError):
        seal(draft(), Recipient(TO), links, ADDRESS, NOW)


def test_address_formatting_differences_in_the_body_are_tolerated():
    # Line breaks inside the address in the body are fine: it is still the address.
    text = TEXT.replace(ADDRESS, ADDRESS.replace(", ", ",\n"))
    assert isinstance(seal(draft(text=text), Recipient(TO), LINKS, ADDRESS, NOW), SealedEmail)


# --- messages the seal refuses ------------------------------------------------


def test_refuses_text_without_the_unsubscribe_link():
    with pytest.raises(SealError, match="plain-text"):
        seal(draft(text=TEXT.replace(PAGE, "")), Recipient(TO), LINKS, ADDRESS, NOW)


def test_refuses_html_without_the_unsubscribe_link():
    body = HTML.replace(f'<a href="{PAGE}">Unsubscribe or take a break</a>', "")
    with pytest.raises(SealError, match="HTML"):
        seal(draft(html=body), Recipient(TO), LINKS, ADDRESS, NOW)


def test_refuses_html_that_only_mentions_the_url_as_text():
    body = HTML.replace(f'<a href="{PAGE}">Unsubscribe or take a break</a>', PAGE)
    with pytest.raises(SealError, match="HTML"):
        seal(draft(html=body), Recipient(TO), LINKS, ADDRESS, NOW)


def test_refuses_a_link_to_some_other_page():
    body = HTML.replace(f'href="{PAGE}"', 'href="https://act.example.org/u/someone-else"')
    with pytest.raises(SealError, match="HTML"):
        seal(draft(html=body), Recipient(TO), LINKS, ADDRESS, NOW)


@pytest.mark.parametrize(
    "anchor",
    [
        f'<a href="{PAGE}"></a>',
        f'<a href="{PAGE}">   </a>',
        f'<a href="{PAGE}"><img src="https://act.example.org/x.png" alt="unsubscribe"></a>',
        f'<a href="{PAGE}"><span></span></a>',
        f'<a href="{PAGE}"><!-- unsubscribe --></a>',
        f'<a href="{PAGE}">&nbsp;</a>',
        f'<a href="{PAGE}">&#8203;</a>',
        f'<a href="{PAGE}">\u200b\u00a0</a>',
    ],
)
def test_refuses_a_link_with_no_visible_text(anchor):
    body = HTML.replace(f'<a href="{PAGE}">Unsubscribe or take a break</a>', anchor)
    with pytest.raises(SealError, match="visible"):
        seal(draft(html=body), Recipient(TO), LINKS, ADDRESS, NOW)


def test_an_entity_encoded_href_still_counts():
    page = PAGE + "?a=1&b=2"
    links = dataclasses.replace(LINKS, page_url=page)
    text = TEXT.replace(PAGE, page)
    body = HTML.replace(f'href="{PAGE}"', 'href="' + page.replace("&", "&amp;") + '"')
    assert isinstance(
        seal(draft(text=text, html=body), Recipient(TO), links, ADDRESS, NOW), SealedEmail
    )


def test_refuses_text_without_the_postal_address():
    with pytest.raises(SealError, match="postal address"):
        seal(draft(text=TEXT.replace(ADDRESS, "")), Recipient(TO), LINKS, ADDRESS, NOW)


def test_refuses_html_without_the_postal_address():
    with pytest.raises(SealError, match="postal address"):
        seal(draft(html=HTML.replace(ADDRESS, "")), Recipient(TO), LINKS, ADDRESS, NOW)


def test_refuses_html_with_the_address_hidden_in_a_comment():
    body = HTML.replace(f"<p>{ADDRESS}</p>", f"<!-- {ADDRESS} -->")
    with pytest.raises(SealError, match="postal address"):
        seal(draft(html=body), Recipient(TO), LINKS, ADDRESS, NOW)


@pytest.mark.parametrize("postal", ["", "   ", "\n"])
def test_refuses_when_no_postal_address_is_configured(postal):
    with pytest.raises(SealError, match="postal address"):
        seal(draft(), Recipient(TO), LINKS, postal, NOW)


def test_refuses_when_no_unsubscribe_page_is_known():
    links = dataclasses.replace(LINKS, page_url="")
    with pytest.raises(SealError):
        seal(draft(), Recipient(TO), links, ADDRESS, NOW)


def test_refuses_a_draft_addressed_to_someone_other_than_the_recipient_checked():
    with pytest.raises(SealError, match="someone other"):
        seal(draft(to="grace@example.org"), Recipient(TO), LINKS, ADDRESS, NOW)


def test_recipient_address_comparison_ignores_case():
    result = seal(draft(to="Ada@Example.org"), Recipient(TO), LINKS, ADDRESS, NOW)
    assert isinstance(result, SealedEmail)


def test_a_broken_message_is_refused_even_for_a_suppressed_recipient():
    # A missing link is a bug in the message: it must surface, not hide behind a skip.
    with pytest.raises(SealError):
        seal(draft(text="no link"), Recipient(TO, status="unsubscribed"), LINKS, ADDRESS, NOW)


# --- recipients who must not be mailed ------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("unsubscribed", SkipReason.UNSUBSCRIBED),
        ("bounced", SkipReason.BOUNCED),
        ("complained", SkipReason.COMPLAINED),
        ("erased", SkipReason.ERASED),
    ],
)
def test_blocked_statuses_are_skipped_with_their_reason(status, reason):
    assert seal(draft(), Recipient(TO, status=status), LINKS, ADDRESS, NOW) is reason


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained", "erased"])
def test_a_blocked_status_wins_over_an_expired_snooze(status):
    recipient = Recipient(TO, status=status, snoozed_until=NOW - timedelta(days=1))
    assert isinstance(seal(draft(), recipient, LINKS, ADDRESS, NOW), SkipReason)


@pytest.mark.parametrize("ahead", [timedelta(seconds=1), timedelta(days=1), timedelta(days=90)])
def test_a_snoozed_recipient_is_skipped(ahead):
    recipient = Recipient(TO, snoozed_until=NOW + ahead)
    assert seal(draft(), recipient, LINKS, ADDRESS, NOW) is SkipReason.SNOOZED


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=1), timedelta(days=400)])
def test_an_expired_snooze_is_mailed_again(ago):
    recipient = Recipient(TO, snoozed_until=NOW - ago)
    assert isinstance(seal(draft(), recipient, LINKS, ADDRESS, NOW), SealedEmail)


# --- nothing else can pass for a sealed message -----------------------------------


def _fields(message: SealedEmail) -> dict:
    return {
        f.name: getattr(message, f.name) for f in dataclasses.fields(message) if f.name != "_key"
    }


def test_sealed_email_cannot_be_constructed_directly():
    with pytest.raises(SealError):
        SealedEmail(**_fields(sealed()))
    with pytest.raises(SealError):
        SealedEmail(**_fields(sealed()), _key=object())


def test_require_sealed_refuses_a_draft_and_look_alikes():
    with pytest.raises(SealError):
        require_sealed(draft())
    with pytest.raises(SealError):
        require_sealed(None)
    with pytest.raises(SealError):
        require_sealed(_fields(sealed()))

    @dataclasses.dataclass
    class LookAlike:
        to: str = TO
        text: str = TEXT
        html: str = HTML
        headers: dict = dataclasses.field(default_factory=dict)
        _key: object = None

    with pytest.raises(SealError):
        require_sealed(LookAlike())


def test_require_sealed_refuses_an_object_made_without_init():
    forged = object.__new__(SealedEmail)
    for name, value in _fields(sealed()).items():
        object.__setattr__(forged, name, value)
    with pytest.raises(SealError):
        require_sealed(forged)


def test_an_unchanged_copy_still_passes():
    message = sealed()
    assert require_sealed(copy.copy(message)) is not None
    assert require_sealed(dataclasses.replace(message)) is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"text": "Hello Ada. No way out here.\n" + ADDRESS},
        {"text": TEXT.replace(ADDRESS, "")},
        {"html": HTML.replace(PAGE, "https://act.example.org/")},
        {"html": HTML.replace(ADDRESS, "")},
        {"headers": {}},
        {"headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}},
        {"headers": {"List-Unsubscribe": f"<{LINKS.one_click_url}>"}},
        {"headers": {"List-Unsubscribe": "<https://evil.example/x>", "List-Unsubscribe-Post": "x"}},
        {"postal_address": ""},
    ],
)
def test_require_sealed_refuses_a_sealed_message_altered_afterwards(changes):
    altered = dataclasses.replace(sealed(), **changes)
    with pytest.raises(SealError):
        require_sealed(altered)


def test_require_sealed_refuses_a_sealed_message_redirected_to_someone_else():
    # Sealed for one (subscribed) person, then re-addressed to another whose
    # status the seal never checked: they may have unsubscribed.
    altered = dataclasses.replace(sealed(), to="unsubscribed-person@example.org")
    with pytest.raises(SealError):
        require_sealed(altered)


def test_require_sealed_refuses_headers_removed_in_place():
    message = sealed()
    del message.headers["List-Unsubscribe"]
    with pytest.raises(SealError):
        require_sealed(message)
    message = sealed()
    message.headers["List-Unsubscribe-Post"] = "no"
    with pytest.raises(SealError):
        require_sealed(message)


def test_sealed_email_is_frozen():
    message = sealed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]
