"""The send pipeline: materialise, claim, send in chunks, reconcile; and bulk providers."""

from __future__ import annotations

import dataclasses
import email
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.extensions import db
from app.integrations.email import EmailProviderError
from app.integrations.email.outbox import OutboxProvider
from app.integrations.email.sendgrid import SendGridProvider
from app.integrations.email.smtp import SmtpProvider
from app.mailings import pipeline
from app.mailings.models import Delivery, DeliveryStatus, Mailing
from app.mailings.tasks import reconcile_mailings, send_mailing, send_mailing_chunk
from app.supporters.models import Supporter
from app.supporters.tokens import make_token
from app.timeutil import utcnow
from privacy.seal import Recipient, SealedRecipient, SealError, seal_recipient
from tests.factories import SupporterFactory
from tests.mailings.helpers import deliveries

BODY = 'Hello {{ first_name | default("friend") }},\n\nPlease [sign the petition](https://org.example/a/x).'


def new_mailing(**fields) -> Mailing:  # type: ignore[no-untyped-def]
    mailing = pipeline.create_mailing(
        db.session, subject="Act now, {{ first_name }}", body_md=BODY, now=utcnow(), **fields
    )
    db.session.commit()
    return mailing


def personalizations(fake) -> list[dict]:  # type: ignore[no-untyped-def]
    return [p for r in fake.accepted for p in r.json["personalizations"]]


# --- providers ------------------------------------------------------------------------


def sealed_chunk(identity, supporters, mailing):  # type: ignore[no-untyped-def]
    body = pipeline.sealed_body(mailing, identity)
    recipients, args = [], []
    for s in supporters:
        row = pipeline.ClaimedDelivery(
            s.id, s.id, s.email, s.first_name, s.public_id, s.status, None
        )
        subs, links = pipeline.recipient_substitutions(identity, row, "unsub@org.example")
        sealed = seal_recipient(body, Recipient(s.email), subs, links, utcnow())
        assert isinstance(sealed, SealedRecipient)
        recipients.append(sealed)
        args.append({"delivery_id": str(s.id)})
    return body, recipients, args


def test_sendgrid_bulk_is_one_request_with_a_personalization_each(app, identity, fake_sendgrid):
    people = [SupporterFactory(first_name=n) for n in ("Ada", "Grace", "")]
    body, recipients, args = sealed_chunk(identity, people, new_mailing())

    message_id = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url).send_bulk(
        body, recipients, args
    )

    [request] = fake_sendgrid.accepted
    assert message_id == request.message_id
    sent = request.json
    assert sent["tracking_settings"] == {
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": False},
    }
    assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
    assert "-unsubscribe_url-" in sent["content"][0]["value"]
    assert identity.postal_address in sent["content"][0]["value"]
    assert len(sent["personalizations"]) == 3
    for person, item, recipient in zip(people, sent["personalizations"], recipients, strict=True):
        assert item["to"] == [{"email": person.email}]
        token = make_token(identity.secret_key, person.public_id)
        assert item["substitutions"]["-unsubscribe_url-"] == f"{identity.base_url}/u/{token}"
        assert item["substitutions"]["-first_name-"] == (person.first_name or "friend")
        assert item["headers"] == recipient.headers
        assert item["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert item["custom_args"] == {"delivery_id": str(person.id)}


def test_sendgrid_bulk_takes_at_most_1000(app, identity, fake_sendgrid):
    [person] = [SupporterFactory()]
    body, recipients, args = sealed_chunk(identity, [person], new_mailing())
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url)
    with pytest.raises(ValueError, match="at most 1000"):
        provider.send_bulk(body, recipients * 1001, args * 1001)
    assert fake_sendgrid.requests == []


def test_sendgrid_bulk_429_carries_when_to_retry(app, identity, fake_sendgrid):
    body, recipients, args = sealed_chunk(identity, [SupporterFactory()], new_mailing())
    provider = SendGridProvider(fake_sendgrid.api_key, fake_sendgrid.url)
    fake_sendgrid.fail_next(429, reset_in=40)
    with pytest.raises(EmailProviderError) as caught:
        provider.send_bulk(body, recipients, args)
    assert caught.value.retryable and 35 <= (caught.value.retry_after or 0) <= 41
    fake_sendgrid.fail_next(503)
    with pytest.raises(EmailProviderError) as caught:
        provider.send_bulk(body, recipients, args)
    assert caught.value.retryable and caught.value.retry_after is None
    fake_sendgrid.fail_next(400)
    with pytest.raises(EmailProviderError) as caught:
        provider.send_bulk(body, recipients, args)
    assert not caught.value.retryable


def test_outbox_bulk_renders_each_recipient(app, identity, outbox):
    people = [SupporterFactory(first_name="Ada"), SupporterFactory(first_name="")]
    body, recipients, args = sealed_chunk(identity, people, new_mailing())
    OutboxProvider(app.config["OUTBOX_DIR"]).send_bulk(body, recipients, args)
    messages = {str(m["To"]): m for m in (outbox.read(e.name) for e in outbox.entries())}
    assert set(messages) == {p.email for p in people}
    ada = messages[people[0].email]
    assert str(ada["Subject"]) == "Act now, Ada"
    text = ada.get_body(preferencelist=("plain",)).get_content()
    assert "Hello Ada," in text and identity.postal_address in text
    assert "-unsubscribe_url-" not in text and "/u/" in text
    assert str(messages[people[1].email]["Subject"]) == "Act now, friend"
    assert str(ada["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"


def test_smtp_bulk_sends_one_message_each(app, identity, smtp_server):
    people = [SupporterFactory(), SupporterFactory()]
    body, recipients, args = sealed_chunk(identity, people, new_mailing())
    SmtpProvider(smtp_server.host, smtp_server.port).send_bulk(body, recipients, args)
    got = smtp_server.collector.envelopes
    assert sorted(e.rcpt_tos[0] for e in got) == sorted(p.email for p in people)
    for envelope in got:
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert identity.postal_address in parsed.get_body(("plain",)).get_content()


# --- materialise ----------------------------------------------------------------------


def test_materialise_takes_only_mailable_supporters_once(app):
    now = utcnow()
    ok = SupporterFactory()
    ended_snooze = SupporterFactory(snoozed_until=now - timedelta(hours=1))
    SupporterFactory(status="unsubscribed")
    SupporterFactory(status="bounced")
    SupporterFactory(status="complained")
    SupporterFactory(status="not_subscribed")
    SupporterFactory(snoozed_until=now + timedelta(days=3))
    mailing = new_mailing()

    assert pipeline.materialise(db.session, mailing, now) == 2
    assert pipeline.materialise(db.session, mailing, now) == 0
    db.session.commit()
    assert {d.supporter_id for d in deliveries(mailing.id)} == {ok.id, ended_snooze.id}


def test_the_daily_cap_skips_who_already_had_a_mailing(app, monkeypatch):
    now = utcnow()
    first, second = SupporterFactory(), SupporterFactory()
    earlier = new_mailing()
    pipeline.materialise(db.session, earlier, now)
    db.session.execute(
        Delivery.__table__.update()
        .where(Delivery.supporter_id == first.id)
        .values(status="sent", sent_at=now - timedelta(hours=2))
    )
    db.session.execute(
        Delivery.__table__.update()
        .where(Delivery.supporter_id == second.id)
        .values(status="sent", sent_at=now - timedelta(hours=25))
    )
    later = new_mailing()
    assert pipeline.materialise(db.session, later, now, daily_cap=1) == 1
    assert [d.supporter_id for d in deliveries(later.id)] == [second.id]
    assert pipeline.materialise(db.session, later, now, daily_cap=2) == 1
    assert pipeline.materialise(db.session, new_mailing(), now, daily_cap=0) == 2


def test_a_body_without_the_rule_is_refused_before_anyone_is_queued(app, identity):
    SupporterFactory()
    mailing = new_mailing()
    with pytest.raises(SealError):
        pipeline.start_send(
            db.session, mailing, dataclasses.replace(identity, postal_address=""), utcnow()
        )
    assert deliveries(mailing.id) == []


# --- claim ----------------------------------------------------------------------------


def test_two_workers_never_claim_the_same_row(app, identity):
    for _ in range(5):
        SupporterFactory()
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    db.session.commit()
    postgres = db.engine.dialect.name == "postgresql"
    with Session(db.engine) as one, Session(db.engine) as two:
        first = pipeline.claim_chunk(one, mailing.id, utcnow(), size=3)
        if not postgres:
            one.commit()  # SQLite has one writer at a time: the second waits for the first
        # On PostgreSQL the first claim is not committed yet: SKIP LOCKED passes its rows by.
        second = pipeline.claim_chunk(two, mailing.id, utcnow(), size=3)
        two.commit()
        one.commit()
    assert len(first) == 3 and len(second) == 2
    assert not {r.delivery_id for r in first} & {r.delivery_id for r in second}
    assert all(d.status == "sending" and d.attempts == 1 for d in deliveries(mailing.id))


def test_a_paused_or_cancelled_mailing_is_not_claimed(app, identity):
    SupporterFactory()
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    pipeline.pause(db.session, mailing, utcnow())
    assert pipeline.claim_chunk(db.session, mailing.id, utcnow()) == []
    assert pipeline.resume(db.session, mailing, utcnow()) == 1
    assert pipeline.cancel(db.session, mailing, utcnow()) == 1
    assert pipeline.claim_chunk(db.session, mailing.id, utcnow()) == []
    assert [d.status for d in deliveries(mailing.id)] == ["cancelled"]


def test_throttle_spreads_chunks_over_the_hour():
    assert pipeline.chunk_countdowns(2500, None) == [0.0, 0.0, 0.0]
    assert pipeline.chunk_countdowns(2500, 3600) == [0.0, 1000.0, 2000.0]
    assert pipeline.chunk_countdowns(0, 10) == []


# --- the whole send, eager tasks ------------------------------------------------------


def test_everyone_mailable_gets_exactly_one_message(app, outbox, identity):
    mailable = [SupporterFactory(first_name=f"P{i}") for i in range(7)]
    unsubscribed = SupporterFactory(status="unsubscribed")
    snoozed = SupporterFactory(snoozed_until=utcnow() + timedelta(days=1))
    bounced = SupporterFactory(status="bounced")
    mailing = new_mailing()

    assert send_mailing.delay(mailing.id).get() == 7
    assert send_mailing.delay(mailing.id).get() == 0  # Send clicked twice

    entries = outbox.entries()
    assert sorted(e.to for e in entries) == sorted(p.email for p in mailable)
    for entry in entries:
        message = outbox.read(entry.name)
        assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert str(message["List-Unsubscribe"]).startswith(f"<{identity.base_url}/u/")
        for part in ("plain", "html"):
            content = message.get_body(preferencelist=(part,)).get_content()
            assert identity.postal_address in content
            assert f"{identity.base_url}/u/" in content
    blocked = {unsubscribed.email, snoozed.email, bounced.email}
    assert not blocked & {e.to for e in entries}
    rows = deliveries(mailing.id)
    assert [r.status for r in rows] == ["sent"] * 7 and all(r.provider_message_id for r in rows)
    db.session.refresh(mailing)
    assert mailing.status == "sent" and mailing.recipients_count == 7


def test_sendgrid_send_in_chunks_reaches_each_once(
    app, sendgrid_config, fake_sendgrid, monkeypatch
):
    # Chunks of 4 instead of 1,000, to see the chunking without thousands of rows.
    people = [SupporterFactory() for _ in range(10)]
    mailing = new_mailing()
    original = pipeline.claim_chunk
    monkeypatch.setattr(
        pipeline, "claim_chunk", lambda s, m, now, size=4: original(s, m, now, size)
    )
    monkeypatch.setattr(
        pipeline, "chunk_countdowns", lambda n, t, first=0, size=4: [0.0] * -(-n // size)
    )

    send_mailing.delay(mailing.id)

    assert len(fake_sendgrid.accepted) == 3
    addresses = [p["to"][0]["email"] for p in personalizations(fake_sendgrid)]
    assert sorted(addresses) == sorted(p.email for p in people)
    by_delivery = {p["custom_args"]["delivery_id"] for p in personalizations(fake_sendgrid)}
    rows = deliveries(mailing.id)
    assert by_delivery == {str(r.id) for r in rows}
    message_ids = {r.message_id for r in fake_sendgrid.accepted}
    assert {r.provider_message_id for r in rows} == message_ids


def test_a_429_then_success_sends_each_once(app, sendgrid_config, fake_sendgrid, monkeypatch):
    # Eager Celery replays a retry at once, but only when errors are not propagated.
    monkeypatch.setitem(app.extensions["celery"].conf, "task_eager_propagates", False)
    retries: list[float] = []
    original_retry = send_mailing_chunk.retry

    def retry(*args, **kwargs):  # type: ignore[no-untyped-def]
        retries.append(kwargs["countdown"])
        return original_retry(*args, **kwargs)

    monkeypatch.setattr(send_mailing_chunk, "retry", retry)
    people = [SupporterFactory() for _ in range(3)]
    mailing = new_mailing()
    fake_sendgrid.fail_next(429, reset_in=40)

    send_mailing.delay(mailing.id)

    assert len(retries) == 1 and 35 <= retries[0] <= 41  # X-RateLimit-Reset honoured

    assert [r.status for r in fake_sendgrid.requests] == [429, 202]
    addresses = [p["to"][0]["email"] for p in personalizations(fake_sendgrid)]
    assert sorted(addresses) == sorted(p.email for p in people)
    rows = deliveries(mailing.id)
    assert [r.status for r in rows] == ["sent"] * 3 and [r.attempts for r in rows] == [2] * 3


def test_someone_who_unsubscribes_after_send_is_skipped(app, outbox, identity):
    stays, leaves = SupporterFactory(), SupporterFactory()
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    leaves.status = "unsubscribed"
    db.session.commit()

    send_mailing_chunk.delay(mailing.id)

    assert [e.to for e in outbox.entries()] == [stays.email]
    statuses = {d.supporter_id: d.status for d in deliveries(mailing.id)}
    assert statuses == {stays.id: "sent", leaves.id: DeliveryStatus.SKIPPED}


def test_reconcile_requeues_rows_a_dead_worker_left_and_counts_them(app, outbox, identity):
    for _ in range(3):
        SupporterFactory()
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    long_ago = utcnow() - timedelta(hours=1)
    claimed = pipeline.claim_chunk(db.session, mailing.id, long_ago, size=2)
    db.session.commit()  # ... and the worker died here

    assert reconcile_mailings.delay().get() == 2

    db.session.refresh(mailing)
    assert mailing.duplicates_count == 2 and mailing.status == "sent"
    assert len(outbox.entries()) == 3
    rows = deliveries(mailing.id)
    assert all(r.status == "sent" for r in rows)
    assert {r.id for r in rows if r.attempts == 2} == {c.delivery_id for c in claimed}


def test_a_fresh_claim_is_not_reconciled(app, identity):
    SupporterFactory()
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    pipeline.claim_chunk(db.session, mailing.id, utcnow())
    result = pipeline.reconcile(db.session, mailing.id, timedelta(minutes=5), utcnow())
    assert result == pipeline.ReconcileResult(0, 0)


# --- CLI ------------------------------------------------------------------------------


def test_cli_creates_and_sends_a_mailing(app, runner, outbox, tmp_path):
    people = [SupporterFactory() for _ in range(2)]
    body = tmp_path / "body.md"
    body.write_text(BODY)

    created = runner.invoke(args=["mailings", "create", "--subject", "Hi", "--body", str(body)])
    assert created.exit_code == 0, created.output
    mailing_id = int(created.output.strip())
    sent = runner.invoke(args=["mailings", "send", str(mailing_id)])
    assert sent.exit_code == 0, sent.output
    assert "2 recipients" in sent.output
    assert sorted(e.to for e in outbox.entries()) == sorted(p.email for p in people)
    again = runner.invoke(args=["mailings", "send", str(mailing_id)])
    assert again.exit_code != 0 and "sent" in again.output
    assert len(outbox.entries()) == 2
    total = db.session.scalar(select(func.count()).select_from(Supporter))
    assert total == 2


def test_cli_pauses_resumes_and_cancels(app, runner, outbox, identity):
    people = [SupporterFactory() for _ in range(2)]
    mailing = new_mailing()
    pipeline.start_send(db.session, mailing, identity, utcnow())
    db.session.commit()

    paused = runner.invoke(args=["mailings", "control", "pause", str(mailing.id)])
    assert paused.exit_code == 0, paused.output
    send_mailing_chunk.delay(mailing.id)
    assert outbox.entries() == []  # a paused mailing claims nothing
    resumed = runner.invoke(args=["mailings", "control", "resume", str(mailing.id)])
    assert resumed.exit_code == 0 and "2 still queued" in resumed.output
    assert sorted(e.to for e in outbox.entries()) == sorted(p.email for p in people)
    cancelled = runner.invoke(args=["mailings", "control", "cancel", str(mailing.id)])
    assert cancelled.exit_code != 0 and "already sent" in cancelled.output


@pytest.mark.parametrize(
    "name, expected",
    [
        ('Jo "JJ" <b>', "Jo JJ b"),
        ("", "friend"),
        ("-unsubscribe_url-", "friend"),
        ("Zoë", "Zoë"),
    ],
)
def test_first_names_are_made_safe_for_substitution(app, identity, name, expected):
    row = pipeline.ClaimedDelivery(1, 1, "a@example.org", name, "pid", "subscribed", None)
    substitutions, links = pipeline.recipient_substitutions(identity, row, "")
    assert substitutions["-first_name-"] == expected
    assert substitutions["-unsubscribe_url-"] == links.page_url and links.mailto == ""
