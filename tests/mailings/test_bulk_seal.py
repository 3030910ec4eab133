"""The bulk seal: one body for many recipients, and every recipient still gets the rule."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from privacy.seal import (
    UNSUBSCRIBE_PLACEHOLDER,
    BulkDraft,
    Recipient,
    SealedBulk,
    SealedRecipient,
    SealError,
    SkipReason,
    UnsubscribeLinks,
    render_recipient,
    require_sealed_bulk,
    seal_bulk,
    seal_recipient,
)

ADDRESS = "100 Example Street, Springfield, ST 00000"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).replace(tzinfo=None)
LINKS = UnsubscribeLinks(
    page_url="https://org.example/u/tok1",
    one_click_url="https://org.example/u/tok1/one-click",
    mailto="mailto:unsubscribe@org.example?subject=unsubscribe%20tok1",
)
TEXT = f"Hi -first_name-,\nAct now.\n--\n{ADDRESS}\nUnsubscribe: {UNSUBSCRIBE_PLACEHOLDER}\n"
HTML = (
    "<p>Hi -first_name-,</p><p>Act now.</p>"
    f'<p>{ADDRESS}</p><p><a href="{UNSUBSCRIBE_PLACEHOLDER}">Unsubscribe</a></p>'
)


def draft(**changes: object) -> BulkDraft:
    base = BulkDraft(
        subject="Hello -first_name-",
        text=TEXT,
        html=HTML,
        sender="Org <news@org.example>",
        reply_to=None,
        category="mailing-1",
    )
    return dataclasses.replace(base, **changes)


def subs(**extra: str) -> dict[str, str]:
    return {UNSUBSCRIBE_PLACEHOLDER: LINKS.page_url, "-first_name-": "Ada", **extra}


@pytest.fixture
def bulk() -> SealedBulk:
    return seal_bulk(draft(), ADDRESS)


def sealed_one(bulk: SealedBulk, address: str = "ada@example.org") -> SealedRecipient:
    outcome = seal_recipient(bulk, Recipient(address), subs(), LINKS, NOW)
    assert isinstance(outcome, SealedRecipient)
    return outcome


def test_a_good_body_and_recipient_pass_with_both_headers(bulk):
    recipient = sealed_one(bulk)
    assert recipient.headers == {
        "List-Unsubscribe": f"<{LINKS.one_click_url}>, <{LINKS.mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    checked_bulk, [checked] = require_sealed_bulk(bulk, [recipient])
    assert checked_bulk is bulk and checked is recipient


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"text": TEXT.replace(UNSUBSCRIBE_PLACEHOLDER, "")}, "plain-text part has no unsubscribe"),
        ({"text": TEXT.replace(ADDRESS, "")}, "plain-text part has no postal address"),
        ({"html": HTML.replace(f'href="{UNSUBSCRIBE_PLACEHOLDER}"', 'href="x"')}, "visible"),
        # The placeholder as text, not as a link.
        ({"html": f"<p>{ADDRESS}</p><p>{UNSUBSCRIBE_PLACEHOLDER}</p>"}, "visible"),
        # A link with no visible text.
        ({"html": HTML.replace(">Unsubscribe<", "><")}, "visible"),
        ({"html": HTML.replace(">Unsubscribe<", ">&nbsp;\u200b<")}, "visible"),
        # Link text that a substitution could empty.
        ({"html": HTML.replace(">Unsubscribe<", ">-first_name-<")}, "visible"),
        ({"html": HTML.replace(f"<p>{ADDRESS}</p>", "")}, "HTML part has no postal address"),
        ({"subject": f"Leave {UNSUBSCRIBE_PLACEHOLDER}"}, "subject"),
    ],
)
def test_seal_bulk_refuses_a_body_that_breaks_the_rule(changes, message):
    with pytest.raises(SealError, match=message):
        seal_bulk(draft(**changes), ADDRESS)


def test_seal_bulk_needs_a_postal_address():
    with pytest.raises(SealError, match="postal address"):
        seal_bulk(draft(), "  ")


def test_a_postal_address_a_substitution_could_change_is_refused():
    address = "100 Example -street- Street"
    body = draft(text=TEXT.replace(ADDRESS, address), html=HTML.replace(ADDRESS, address))
    with pytest.raises(SealError, match="placeholder"):
        seal_bulk(body, address)


def test_a_text_only_body_is_allowed(bulk):
    assert seal_bulk(draft(html=None), ADDRESS).html is None


@pytest.mark.parametrize(
    "status, snoozed_until, reason",
    [
        ("unsubscribed", None, SkipReason.UNSUBSCRIBED),
        ("bounced", None, SkipReason.BOUNCED),
        ("complained", None, SkipReason.COMPLAINED),
        ("erased", None, SkipReason.ERASED),
        ("not_subscribed", None, SkipReason.NOT_SUBSCRIBED),
        ("subscribed", NOW + timedelta(days=1), SkipReason.SNOOZED),
    ],
)
def test_seal_recipient_skips_exactly_as_seal_does(bulk, status, snoozed_until, reason):
    recipient = Recipient("ada@example.org", status, snoozed_until)
    assert seal_recipient(bulk, recipient, subs(), LINKS, NOW) is reason


def test_a_snooze_that_ended_does_not_skip(bulk):
    recipient = Recipient("ada@example.org", "subscribed", NOW - timedelta(seconds=1))
    assert isinstance(seal_recipient(bulk, recipient, subs(), LINKS, NOW), SealedRecipient)


@pytest.mark.parametrize(
    "substitutions, message",
    [
        ({"-first_name-": "Ada"}, "own page"),
        ({UNSUBSCRIBE_PLACEHOLDER: "https://org.example/u/someone-else"}, "own page"),
        (subs(**{"-first_name-": "<!--"}), "plain text"),
        (subs(**{"-first_name-": "Ada\r\nBcc: x@y"}), "plain text"),
        (subs(**{"-first_name-": UNSUBSCRIBE_PLACEHOLDER}), "contains a placeholder"),
        (subs(**{"Springfield": ""}), "not a placeholder"),
        (subs(**{"-First-": "x"}), "not a placeholder"),
    ],
)
def test_seal_recipient_refuses_substitutions_that_could_break_the_rule(
    bulk, substitutions, message
):
    with pytest.raises(SealError, match=message):
        seal_recipient(bulk, Recipient("ada@example.org"), substitutions, LINKS, NOW)


def test_seal_recipient_refuses_a_non_http_one_click_target(bulk):
    links = dataclasses.replace(LINKS, one_click_url="javascript:alert(1)")
    with pytest.raises(SealError, match="http"):
        seal_recipient(bulk, Recipient("ada@example.org"), subs(), links, NOW)


@pytest.mark.parametrize("address", ["a@x.org, b@y.org", "a@x.org\r\nBcc: b@y.org", "nobody"])
def test_seal_recipient_refuses_anything_but_one_address(bulk, address):
    with pytest.raises(SealError, match="single email address"):
        seal_recipient(bulk, Recipient(address), subs(), LINKS, NOW)


def test_nothing_but_the_seal_can_make_sealed_objects(bulk):
    with pytest.raises(SealError):
        SealedBulk("s", TEXT, HTML, "a@b.org", None, "c", ADDRESS)
    with pytest.raises(SealError):
        SealedRecipient("a@b.org", subs(), {}, LINKS, bulk._fingerprint)
    with pytest.raises(SealError):
        seal_recipient(draft(), Recipient("ada@example.org"), subs(), LINKS, NOW)  # type: ignore[arg-type]


def test_providers_refuse_anything_changed_after_sealing(bulk):
    recipient = sealed_one(bulk)
    edited = dataclasses.replace(bulk, text=TEXT.replace(ADDRESS, "nowhere"))
    with pytest.raises(SealError, match="changed after"):
        require_sealed_bulk(edited, [recipient])
    readdressed = dataclasses.replace(recipient, to="victim@example.org")
    with pytest.raises(SealError, match="changed after"):
        require_sealed_bulk(bulk, [readdressed])
    recipient.headers.pop("List-Unsubscribe-Post")  # mutate the dict in place
    with pytest.raises(SealError, match="changed after"):
        require_sealed_bulk(bulk, [recipient])


def test_a_recipient_sealed_for_one_body_cannot_ride_on_another(bulk):
    other = seal_bulk(draft(subject="Something else"), ADDRESS)
    with pytest.raises(SealError, match="another body"):
        require_sealed_bulk(other, [sealed_one(bulk)])


def test_require_sealed_bulk_refuses_unsealed_things(bulk):
    with pytest.raises(SealError):
        require_sealed_bulk(draft(), [])
    with pytest.raises(SealError):
        require_sealed_bulk(bulk, [{"to": "a@b.org"}])
    with pytest.raises(SealError):
        require_sealed_bulk(bulk, "ada@example.org")


def test_render_recipient_fills_placeholders_into_a_sealed_single_email(bulk):
    message = render_recipient(bulk, sealed_one(bulk))
    assert message.to == "ada@example.org"
    assert message.subject == "Hello Ada"
    assert "Hi Ada," in message.text and LINKS.page_url in message.text
    assert f'<a href="{LINKS.page_url}">Unsubscribe</a>' in (message.html or "")
    assert ADDRESS in message.text and "-first_name-" not in message.text
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_seal_recipient_refuses_a_body_edited_after_sealing(bulk):
    edited = dataclasses.replace(bulk, html=HTML.replace(ADDRESS, ""))
    with pytest.raises(SealError, match="changed after"):
        seal_recipient(edited, Recipient("ada@example.org"), subs(), LINKS, NOW)
