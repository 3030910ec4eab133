"""Transactional email to one supporter: once per key, skips with reasons, failures retried."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import select

from app.extensions import db
from app.integrations.email import EmailProviderError, provider_from_config
from app.mailings.models import EmailLog, EmailStatus
from app.mailings.service import send_to_supporter
from app.supporters import service as supporters
from app.supporters.models import Supporter, SupporterStatus
from app.supporters.tasks import send_pending_welcomes, send_welcome_email
from app.timeutil import utcnow
from tests.factories import SupporterFactory


def _logs() -> list[EmailLog]:
    db.session.expire_all()  # tasks commit through their own session
    return list(db.session.scalars(select(EmailLog).order_by(EmailLog.id)))


def _eml_files(outbox) -> list:  # type: ignore[no-untyped-def]
    return sorted(outbox.directory.glob("*.eml")) if outbox.directory.is_dir() else []


def test_send_to_supporter_sends_once_per_key(app, outbox, identity):
    ada = SupporterFactory(email="ada@example.org")
    now = utcnow()

    first = send_to_supporter(db.session, outbox, identity, ada, "welcome", "test:1", now)
    db.session.commit()
    again = send_to_supporter(db.session, outbox, identity, ada, "welcome", "test:1", now)
    db.session.commit()

    assert first is not None and first.status == EmailStatus.SENT
    assert first.provider == "outbox" and first.provider_message_id
    assert first.sent_at == now and first.supporter_id == ada.id
    assert again is None
    [eml] = _eml_files(outbox)
    assert first.provider_message_id in eml.name
    assert [(r.dedupe_key, r.status) for r in _logs()] == [("test:1", "sent")]

    other = send_to_supporter(db.session, outbox, identity, ada, "welcome", "test:2", now)
    db.session.commit()
    assert other is not None and other.status == EmailStatus.SENT
    assert len(_eml_files(outbox)) == 2


def test_send_welcome_twice_sends_one_email(app, outbox, identity):
    ada = SupporterFactory(email="ada@example.org", first_name="Ada")
    now = utcnow()

    assert supporters.send_welcome(db.session, outbox, identity, ada.id, now) == "sent"
    db.session.commit()
    assert supporters.send_welcome(db.session, outbox, identity, ada.id, now) == "not-needed"
    db.session.commit()

    [eml] = _eml_files(outbox)
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert str(message["To"]) == "ada@example.org"
    assert "Dear Ada," in message.get_body(preferencelist=("plain",)).get_content()
    [row] = _logs()
    assert (row.dedupe_key, row.template, row.status) == (f"welcome:{ada.id}", "welcome", "sent")
    assert db.session.get(Supporter, ada.id).welcomed_at == now


def test_welcome_unsubscribe_header_works_for_that_supporter(app, client, outbox, identity):
    """The one-click target the email carries unsubscribes exactly its recipient."""
    ada = SupporterFactory(email="ada@example.org")
    bob = SupporterFactory(email="bob@example.org")
    supporters.send_welcome(db.session, outbox, identity, ada.id, utcnow())
    db.session.commit()
    [eml] = _eml_files(outbox)
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    one_click = str(message["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert one_click.startswith(app.config["BASE_URL"] + "/u/")

    response = client.post(
        one_click.removeprefix(app.config["BASE_URL"]),
        data={"List-Unsubscribe": "One-Click"},
    )

    assert response.status_code == 200
    db.session.expire_all()
    assert db.session.get(Supporter, ada.id).status == SupporterStatus.UNSUBSCRIBED
    assert db.session.get(Supporter, bob.id).status == SupporterStatus.SUBSCRIBED


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": SupporterStatus.UNSUBSCRIBED.value}, "unsubscribed"),
        ({"snoozed_until": utcnow() + timedelta(days=30)}, "snoozed"),
        ({"status": SupporterStatus.BOUNCED.value}, "bounced"),
        ({"status": SupporterStatus.COMPLAINED.value}, "complained"),
    ],
)
def test_blocked_supporters_are_skipped_with_a_reason(app, outbox, identity, changes, reason):
    person = SupporterFactory(email="blocked@example.org", **changes)
    now = utcnow()

    outcome = supporters.send_welcome(db.session, outbox, identity, person.id, now)
    db.session.commit()

    assert outcome == f"skipped:{reason}"
    assert _eml_files(outbox) == []
    [row] = _logs()
    assert (row.status, row.skip_reason, row.provider) == ("skipped", reason, "")
    assert row.sent_at is None
    # Skipping is the answer for this email: it is not owed any more, nor tried again.
    assert db.session.get(Supporter, person.id).welcomed_at == now
    assert (
        send_to_supporter(db.session, outbox, identity, person, "welcome", row.dedupe_key, now)
        is None
    )


def test_an_ended_snooze_no_longer_skips(app, outbox, identity):
    person = SupporterFactory(snoozed_until=utcnow() - timedelta(minutes=1))
    assert supporters.send_welcome(db.session, outbox, identity, person.id, utcnow()) == "sent"
    assert len(_eml_files(outbox)) == 1


def test_provider_failure_is_logged_and_a_retry_sends(
    app, sendgrid_config, fake_sendgrid, identity
):
    ada = SupporterFactory(email="ada@example.org")
    provider = provider_from_config(sendgrid_config)
    fake_sendgrid.fail_next(500)

    with pytest.raises(EmailProviderError) as caught:
        supporters.send_welcome(db.session, provider, identity, ada.id, utcnow())
    db.session.commit()  # what the task does, so staff can see the failure

    assert caught.value.retryable
    [row] = _logs()
    assert (row.status, row.provider, row.sent_at) == ("failed", "sendgrid", None)
    assert "500" in row.error
    assert db.session.get(Supporter, ada.id).welcomed_at is None
    assert fake_sendgrid.accepted == []

    assert supporters.send_welcome(db.session, provider, identity, ada.id, utcnow()) == "sent"
    db.session.commit()

    [row] = _logs()
    [accepted] = fake_sendgrid.accepted
    assert row.status == "sent" and row.provider_message_id == accepted.message_id
    assert accepted.json["custom_args"] == {"email_log_id": str(row.id)}
    assert accepted.json["personalizations"][0]["to"] == [{"email": "ada@example.org"}]
    assert db.session.get(Supporter, ada.id).welcomed_at is not None


def test_task_keeps_a_failed_row_when_the_provider_rejects_for_good(
    app, sendgrid_config, fake_sendgrid
):
    ada = SupporterFactory(email="ada@example.org")
    fake_sendgrid.fail_next(400)

    assert send_welcome_email(ada.id) == "failed"

    [row] = _logs()
    assert row.status == "failed" and "400" in row.error
    assert fake_sendgrid.accepted == []


def test_task_raises_for_a_retryable_failure_after_committing_the_row(
    app, sendgrid_config, fake_sendgrid
):
    ada = SupporterFactory(email="ada@example.org")
    fake_sendgrid.fail_next(429)

    # Called directly (not through a worker), Celery's retry re-raises the cause.
    with pytest.raises(EmailProviderError):
        send_welcome_email(ada.id)

    [row] = _logs()
    assert row.status == "failed" and "429" in row.error
    assert send_welcome_email(ada.id) == "sent"
    assert [r.status for r in _logs()] == ["sent"]
    assert len(fake_sendgrid.accepted) == 1


def _supporter_created(minutes_ago: float, **fields):  # type: ignore[no-untyped-def]
    when = utcnow() - timedelta(minutes=minutes_ago)
    return SupporterFactory(created_at=when, updated_at=when, **fields)


def test_pending_welcomes_finds_supporters_never_queued(app):
    owed = _supporter_created(5)
    _supporter_created(0.5)  # just signed up: its own task is still on the way
    _supporter_created(5, welcomed_at=utcnow())
    _supporter_created(5, status=SupporterStatus.UNSUBSCRIBED.value)
    _supporter_created(60 * 24 * 4)  # too old to welcome now

    assert supporters.pending_welcome_ids(db.session, utcnow()) == [owed.id]


def test_beat_sweep_sends_a_welcome_that_was_never_queued(app, outbox):
    owed = _supporter_created(5, email="late@example.org")

    assert send_pending_welcomes() == 1  # eager in tests: the welcome is sent right here

    [eml] = _eml_files(outbox)
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert str(message["To"]) == "late@example.org"
    [row] = _logs()
    assert (row.dedupe_key, row.status) == (f"welcome:{owed.id}", "sent")
    assert db.session.get(Supporter, owed.id).welcomed_at is not None
    # The next sweep finds nothing left to do.
    assert send_pending_welcomes() == 0
    assert len(_eml_files(outbox)) == 1


def test_sweep_leaves_failed_welcomes_to_their_task(app, sendgrid_config, fake_sendgrid):
    """A failed welcome is retried by its own task (or failed for good, for staff to see).

    If the minute-by-minute sweep queued it again too, a provider outage would pile up
    a new retrying task per supporter every minute, and a permanent rejection would be
    re-sent to the provider every minute for days.
    """
    rejected = _supporter_created(5, email="rejected@example.org")
    fake_sendgrid.fail_next(400)
    assert send_welcome_email(rejected.id) == "failed"

    assert supporters.pending_welcome_ids(db.session, utcnow()) == []
    assert send_pending_welcomes() == 0
    assert len(fake_sendgrid.requests) == 1
