"""The three email providers deliver what the seal made, and refuse anything else."""

from __future__ import annotations

import dataclasses
import email
import time
from email import policy
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime

import pytest

from app.integrations.email import EmailProviderError, provider_from_config
from app.integrations.email.outbox import OutboxProvider
from app.integrations.email.sendgrid import SendGridProvider
from app.integrations.email.smtp import SmtpProvider
from app.mailings.service import render_draft, supporter_envelope
from app.timeutil import utcnow
from privacy.seal import Draft, Recipient, SealedEmail, SealError, seal
from tests.fakes import free_port


def _raw_header_lines(raw: bytes, name: str) -> list[bytes]:
    """Each occurrence of a header as its raw physical lines (the first plus any folds)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    found: list[bytes] = []
    for i, line in enumerate(head):
        if line.lower().startswith(name.lower().encode() + b":"):
            block = [line]
            for more in head[i + 1 :]:
                if not more[:1].isspace():
                    break
                block.append(more)
            found.append(b"\r\n".join(block))
    return found


def _expected_list_unsubscribe(message: SealedEmail) -> str:
    assert message.links.mailto.startswith("mailto:")
    return f"<{message.links.one_click_url}>, <{message.links.mailto}>"


def assert_unsubscribe_headers(raw: bytes, message: SealedEmail) -> None:
    """List-Unsubscribe is one plain header line (no RFC 2047 encoded-words, no folding)."""
    lines = _raw_header_lines(raw, "List-Unsubscribe")
    assert len(lines) == 1, lines
    assert lines[0] == f"List-Unsubscribe: {_expected_list_unsubscribe(message)}".encode()
    assert b"=?" not in lines[0]
    posts = _raw_header_lines(raw, "List-Unsubscribe-Post")
    assert posts == [b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"]


def assert_text_and_html(parsed: EmailMessage, message: SealedEmail) -> None:
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    text, body_html = text_part.get_content(), html_part.get_content()
    assert message.links.page_url in text
    assert message.postal_address in text
    assert f'href="{message.links.page_url}"' in body_html
    assert message.postal_address in body_html


# --- outbox -------------------------------------------------------------------------------


def test_outbox_writes_a_complete_rfc5322_message(app, outbox, sealed, supporter):
    message_id = outbox.send(sealed)

    files = sorted(outbox.directory.glob("*.eml"))
    assert [f.name for f in files] == [f.name for f in outbox.directory.iterdir()]  # no .tmp
    assert len(files) == 1 and message_id in files[0].name
    raw = files[0].read_bytes()
    assert b"\r\n" in raw  # SMTP line endings, as a mail server would store it
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)

    assert parseaddr(str(parsed["From"]))[1] == parseaddr(app.config["MAIL_FROM"])[1]
    assert str(parsed["To"]) == supporter.email
    assert str(parsed["Subject"]) == f"Welcome to {app.config['ORG_NAME']}"
    sent_at = parsedate_to_datetime(str(parsed["Date"])).replace(tzinfo=None)
    assert abs((sent_at - utcnow()).total_seconds()) < 60
    assert str(parsed["Message-ID"]).startswith("<") and "@" in str(parsed["Message-ID"])
    assert parsed.get_content_type() == "multipart/alternative"
    assert_unsubscribe_headers(raw, sealed)
    assert_text_and_html(parsed, sealed)

    [entry] = outbox.entries()
    assert entry.name == files[0].name
    assert entry.to == supporter.email
    assert entry.subject == str(parsed["Subject"])
    assert str(outbox.read(entry.name)["Message-ID"]) == str(parsed["Message-ID"])


def test_outbox_lists_newest_first_and_refuses_names_outside_it(outbox, sealed):
    outbox.send(sealed)
    outbox.send(sealed)
    names = [e.name for e in outbox.entries()]
    assert len(names) == 2 and names == sorted(names, reverse=True)
    for name in ("../secret_key", "../x.eml", "a/b.eml", names[0][:-4]):
        with pytest.raises(FileNotFoundError):
            outbox.read(name)


def test_outbox_is_empty_without_a_directory(tmp_path):
    assert OutboxProvider(tmp_path / "missing").entries() == []


def test_long_header_values_are_not_encoded_words(app, outbox, identity, supporter):
    """A long one-click URL (a long BASE_URL) still gives one plain List-Unsubscribe line."""
    long_base = "https://act.example.org/" + "/".join(["campaigns"] * 12)
    far_identity = dataclasses.replace(identity, base_url=long_base)
    envelope = supporter_envelope(far_identity, supporter)
    links = envelope.links
    draft = render_draft("welcome", envelope, far_identity, {"supporter": supporter})
    message = seal(draft, Recipient(supporter.email), links, identity.postal_address, utcnow())
    assert isinstance(message, SealedEmail)

    outbox.send(message)

    raw = next(outbox.directory.glob("*.eml")).read_bytes()
    assert_unsubscribe_headers(raw, message)
    assert len(_raw_header_lines(raw, "List-Unsubscribe")[0]) > 250


# --- sendgrid -----------------------------------------------------------------------------


def test_sendgrid_request_through_the_real_library(sendgrid_config, fake_sendgrid, sealed):
    provider = provider_from_config(sendgrid_config)
    assert isinstance(provider, SendGridProvider)

    message_id = provider.send(sealed, {"email_log_id": "17"})

    [request] = fake_sendgrid.accepted
    assert message_id == request.message_id != ""
    assert request.headers["authorization"] == f"Bearer {fake_sendgrid.api_key}"
    assert request.headers["user-agent"].startswith("sendgrid/")
    body = request.json
    assert body["personalizations"] == [{"to": [{"email": sealed.to}]}]
    assert body["from"]["email"] == parseaddr(sealed.sender)[1]
    assert body["subject"] == sealed.subject
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][0]["value"] == sealed.text
    assert body["content"][1]["value"] == sealed.html
    assert body["headers"] == {
        "List-Unsubscribe": _expected_list_unsubscribe(sealed),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["custom_args"] == {"email_log_id": "17"}
    assert body["categories"] == ["welcome"]
    # Opens and clicks are tracked on our own host (privacy rule 4), never by SendGrid.
    tracking = body["tracking_settings"]
    assert tracking["click_tracking"]["enable"] is False
    assert tracking["click_tracking"]["enable_text"] is False
    assert tracking["open_tracking"]["enable"] is False


@pytest.mark.parametrize("status", [429, 500, 503])
def test_sendgrid_overload_and_outage_are_retryable(sendgrid_config, fake_sendgrid, sealed, status):
    provider = provider_from_config(sendgrid_config)
    fake_sendgrid.fail_next(status)
    with pytest.raises(EmailProviderError) as caught:
        provider.send(sealed)
    assert caught.value.retryable is True
    assert str(status) in str(caught.value)
    # The next attempt goes through: the failure was temporary.
    assert provider.send(sealed) == fake_sendgrid.accepted[-1].message_id


def test_sendgrid_rate_limit_answer_says_when_to_come_back(fake_sendgrid, sealed):
    """The fake answers 429 as SendGrid does, and the cause stays on the error for callers."""
    fake_sendgrid.fail_next(429, reset_in=30)
    with pytest.raises(EmailProviderError) as caught:
        SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url).send(sealed)
    cause = caught.value.__cause__
    assert getattr(cause, "status_code", None) == 429
    reset = int(cause.headers["X-RateLimit-Reset"])  # type: ignore[union-attr]
    assert 0 < reset - time.time() <= 31
    assert cause.headers["X-RateLimit-Remaining"] == "0"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [400, 413])
def test_sendgrid_rejections_are_not_retryable(sendgrid_config, fake_sendgrid, sealed, status):
    fake_sendgrid.fail_next(status)
    with pytest.raises(EmailProviderError) as caught:
        provider_from_config(sendgrid_config).send(sealed)
    assert caught.value.retryable is False


def test_sendgrid_wrong_key_is_not_retryable(fake_sendgrid, sealed):
    with pytest.raises(EmailProviderError) as caught:
        SendGridProvider("SG.wrong", fake_sendgrid.url).send(sealed)
    assert caught.value.retryable is False
    assert fake_sendgrid.requests[0].status == 401
    assert fake_sendgrid.accepted == []


def test_sendgrid_without_key_refuses_to_start(sendgrid_config, monkeypatch):
    monkeypatch.setitem(sendgrid_config, "SENDGRID_API_KEY", "")
    with pytest.raises(EmailProviderError) as caught:
        provider_from_config(sendgrid_config)
    assert caught.value.retryable is False


def test_sendgrid_unreachable_is_retryable(sealed):
    provider = SendGridProvider("SG.key", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EmailProviderError) as caught:
        provider.send(sealed)
    assert caught.value.retryable is True


def test_sendgrid_slow_answer_times_out_and_is_retryable(fake_sendgrid, sealed):
    """A hung provider must not hang the worker: the request has a timeout."""
    fake_sendgrid.delay = 5.0
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url, timeout=0.5)
    with pytest.raises(EmailProviderError) as caught:
        provider.send(sealed)
    assert caught.value.retryable is True


def test_sendgrid_has_a_default_timeout(fake_sendgrid):
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url)
    assert provider.client.client.timeout is not None
    assert 0 < provider.client.client.timeout <= 60


def test_sendgrid_garbled_answer_is_retryable(fake_sendgrid, sealed):
    fake_sendgrid.fail_next(-1)  # not HTTP at all
    with pytest.raises(EmailProviderError) as caught:
        SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url).send(sealed)
    assert caught.value.retryable is True


def test_fake_sendgrid_validates_like_the_real_api(fake_sendgrid):
    """The fake must refuse what SendGrid refuses, or the tests above prove little."""
    import json
    import urllib.error
    import urllib.request

    def post(body: object) -> int:
        request = urllib.request.Request(
            f"{fake_sendgrid.url}/v3/mail/send",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {fake_sendgrid.api_key}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    good = {
        "personalizations": [{"to": [{"email": "a@example.org"}]}],
        "from": {"email": "b@example.org"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "v"}],
    }
    assert post(good) == 202
    assert post({**good, "personalizations": []}) == 400
    too_many = [{"to": [{"email": f"a{i}@example.org"}]} for i in range(1001)]
    assert post({**good, "personalizations": too_many}) == 400
    assert post({k: v for k, v in good.items() if k != "from"}) == 400
    assert post({k: v for k, v in good.items() if k != "subject"}) == 400
    assert post({k: v for k, v in good.items() if k != "content"}) == 400
    html_first = [{"type": "text/html", "value": "h"}, {"type": "text/plain", "value": "t"}]
    assert post({**good, "content": html_first}) == 400
    assert len(fake_sendgrid.accepted) == 1


# --- smtp ---------------------------------------------------------------------------------


def test_smtp_delivers_headers_and_postal_address(app, smtp_server, sealed, monkeypatch):
    monkeypatch.setitem(app.config, "EMAIL_PROVIDER", "smtp")
    monkeypatch.setitem(app.config, "SMTP_HOST", smtp_server.host)
    monkeypatch.setitem(app.config, "SMTP_PORT", smtp_server.port)
    provider = provider_from_config(app.config)
    assert isinstance(provider, SmtpProvider)

    message_id = provider.send(sealed)

    [envelope] = smtp_server.collector.envelopes
    assert envelope.mail_from == parseaddr(sealed.sender)[1]
    assert envelope.rcpt_tos == [sealed.to]
    raw = envelope.original_content
    assert isinstance(raw, bytes)
    assert_unsubscribe_headers(raw, sealed)
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert str(parsed["Message-ID"]) == f"<{message_id}>"
    assert str(parsed["To"]) == sealed.to
    assert_text_and_html(parsed, sealed)
    assert app.config["ORG_POSTAL_ADDRESS"] in raw.decode()


def test_smtp_refused_recipient_is_not_retryable(smtp_server, sealed):
    smtp_server.collector.refuse.add(sealed.to)
    provider = SmtpProvider(smtp_server.host, smtp_server.port, timeout=5)
    with pytest.raises(EmailProviderError) as caught:
        provider.send(sealed)
    assert caught.value.retryable is False
    assert smtp_server.collector.envelopes == []


def test_smtp_unreachable_is_retryable(sealed):
    provider = SmtpProvider("127.0.0.1", free_port(), timeout=5)
    with pytest.raises(EmailProviderError) as caught:
        provider.send(sealed)
    assert caught.value.retryable is True


# --- the seal is required -----------------------------------------------------------------


def _not_sealed(sealed: SealedEmail) -> list[object]:
    """Things that look like an email but did not (or no longer) pass privacy.seal."""
    draft = Draft(
        to=sealed.to,
        subject=sealed.subject,
        text=sealed.text,
        html=sealed.html,
        sender=sealed.sender,
        headers=dict(sealed.headers),
    )
    no_link_text = sealed.text.replace(sealed.links.page_url, "")
    no_headers = {k: v for k, v in sealed.headers.items() if not k.startswith("List-Unsubscribe")}
    look_alike = type("SealedEmail", (), {**vars(draft), "links": sealed.links})()
    return [
        draft,
        look_alike,
        dataclasses.replace(sealed, text=no_link_text),
        dataclasses.replace(sealed, html=sealed.html.replace(sealed.postal_address, "")),
        dataclasses.replace(sealed, headers=no_headers),
        dataclasses.replace(sealed, to="someone-else@example.org"),
    ]


def test_a_sealed_email_cannot_be_forged(sealed):
    fields = {f.name: getattr(sealed, f.name) for f in dataclasses.fields(sealed)}
    fields["_key"] = object()
    with pytest.raises(SealError):
        SealedEmail(**fields)


def test_outbox_refuses_unsealed(outbox, sealed):
    for message in _not_sealed(sealed):
        with pytest.raises(SealError):
            outbox.send(message)  # type: ignore[arg-type]
    assert outbox.entries() == []
    assert not outbox.directory.exists() or list(outbox.directory.iterdir()) == []


def test_sendgrid_refuses_unsealed(sendgrid_config, fake_sendgrid, sealed):
    provider = provider_from_config(sendgrid_config)
    for message in _not_sealed(sealed):
        with pytest.raises(SealError):
            provider.send(message)  # type: ignore[arg-type]
    assert fake_sendgrid.requests == []


def test_smtp_refuses_unsealed(smtp_server, sealed):
    provider = SmtpProvider(smtp_server.host, smtp_server.port, timeout=5)
    for message in _not_sealed(sealed):
        with pytest.raises(SealError):
            provider.send(message)  # type: ignore[arg-type]
    assert smtp_server.collector.envelopes == []
