"""POST /webhooks/sendgrid: signatures made exactly as SendGrid makes them, an idempotent
inbox, and what each kind of event does to deliveries, supporters and tracking."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from app.extensions import db
from app.mailings import event_tasks, events
from app.mailings.models import (
    Delivery,
    DeliveryStatus,
    Mailing,
    MailingLink,
    ProviderEvent,
    TrackingEvent,
)
from app.supporters.models import ConsentEvent, Supporter, SupporterStatus
from app.timeutil import utcnow
from tests.factories import SupporterFactory

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
LINK = "https://example.org/a/save-the-river"


class Signer:
    """SendGrid's side: a P-256 key; the public half is what staff paste into the setting."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: str, timestamp: str = "1732449600") -> dict[str, str]:
        signature = self.private_key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: timestamp}


@pytest.fixture
def signer(app, monkeypatch) -> Signer:  # type: ignore[no-untyped-def]
    signer = Signer()
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key)
    return signer


@pytest.fixture
def delivery(app) -> Delivery:  # type: ignore[no-untyped-def]
    supporter = SupporterFactory(email="river@example.org")
    mailing = Mailing(subject="Save the river", status="sending")
    db.session.add(mailing)
    db.session.flush()
    db.session.add(MailingLink(mailing_id=mailing.id, position=0, url=LINK))
    row = Delivery(
        mailing_id=mailing.id,
        supporter_id=supporter.id,
        status=DeliveryStatus.SENDING,
        claimed_at=utcnow() - timedelta(minutes=30),
    )
    db.session.add(row)
    db.session.commit()
    return row


_counter = iter(range(1, 10**6))


def event(kind: str, delivery: Delivery | None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "email": "river@example.org",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": f"evt-{kind}-{next(_counter)}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    if delivery is not None:
        data["delivery_id"] = str(delivery.id)
    data.update(extra)
    return data


def post(client, payload: list[dict[str, Any]] | str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(
        "/webhooks/sendgrid",
        data=body,
        headers=headers or {},
        content_type="application/json",
    )


def signed_post(client, signer: Signer, payload: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    body = json.dumps(payload)
    return post(client, body, signer.headers(body))


def stored() -> list[ProviderEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(ProviderEvent).order_by(ProviderEvent.id)))


def supporter_of(delivery: Delivery) -> Supporter:
    db.session.expire_all()
    return db.session.get(Supporter, delivery.supporter_id)  # type: ignore[return-value]


# --- verification -----------------------------------------------------------------------------


def test_a_validly_signed_batch_is_accepted_stored_and_processed(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    response = signed_post(client, signer, [event("delivered", delivery)])
    assert response.status_code == 200
    rows = stored()
    assert [(r.event_type, r.delivery_id) for r in rows] == [("delivered", delivery.id)]
    assert rows[0].processed_at is not None
    db.session.expire_all()
    assert db.session.get(Delivery, delivery.id).status == DeliveryStatus.SENT


def test_a_pem_armoured_key_works_too(client, app, signer, delivery, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", pem.decode())
    assert signed_post(client, signer, [event("processed", delivery)]).status_code == 200


def test_tampered_unsigned_and_wrongly_signed_requests_are_refused(
    client, signer, delivery
) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps([event("spamreport", delivery)])
    headers = signer.headers(body)
    tampered = body.replace("river@example.org", "other@example.org")
    assert post(client, tampered, headers).status_code == 403
    assert post(client, body).status_code == 403  # unsigned
    assert post(client, body, {**headers, TIMESTAMP: "1732449601"}).status_code == 403
    assert post(client, body, {**headers, SIGNATURE: "not base64!"}).status_code == 403
    assert post(client, body, Signer().headers(body)).status_code == 403  # another key
    assert stored() == []
    assert supporter_of(delivery).status == SupporterStatus.SUBSCRIBED


def test_without_a_key_unsigned_events_are_refused_outside_development(
    client, app, delivery, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", "")
    monkeypatch.setitem(app.config, "ENV_NAME", "production")
    with caplog.at_level(logging.ERROR, logger="app.webhooks.sendgrid"):
        assert post(client, [event("unsubscribe", delivery)]).status_code == 403
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in caplog.text
    assert stored() == []

    monkeypatch.setitem(app.config, "ENV_NAME", "development")
    assert post(client, [event("unsubscribe", delivery)]).status_code == 200
    assert supporter_of(delivery).status == SupporterStatus.UNSUBSCRIBED


def test_the_webhook_needs_no_csrf_token_and_rejects_junk(client, signer) -> None:  # type: ignore[no-untyped-def]
    body = "not json"
    assert post(client, body, signer.headers(body)).status_code == 400
    body = json.dumps({"event": "open"})  # one object, not an array: still taken
    assert post(client, body, signer.headers(body)).status_code == 200
    body = json.dumps("a string")
    assert post(client, body, signer.headers(body)).status_code == 400


def test_a_duplicate_event_id_is_stored_once(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    first = event("delivered", delivery)
    assert signed_post(client, signer, [first, first]).status_code == 200
    assert signed_post(client, signer, [first]).status_code == 200  # SendGrid retried
    assert len(stored()) == 1


# --- what each event does ---------------------------------------------------------------------


def test_processed_and_delivered_mark_the_delivery_sent(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    assert signed_post(client, signer, [event("processed", delivery)]).status_code == 200
    db.session.expire_all()
    row = db.session.get(Delivery, delivery.id)
    assert row.status == DeliveryStatus.SENT and row.sent_at is not None


def test_mark_processed_changes_only_rows_still_sending(app, delivery) -> None:  # type: ignore[no-untyped-def]
    other = Delivery(
        mailing_id=delivery.mailing_id,
        supporter_id=SupporterFactory().id,
        status=DeliveryStatus.QUEUED,
    )
    db.session.add(other)
    db.session.commit()
    assert events.mark_processed(db.session, [delivery.id, other.id, 99999]) == 1
    assert events.mark_processed(db.session, [delivery.id]) == 0
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Delivery, delivery.id).status == DeliveryStatus.SENT
    assert db.session.get(Delivery, other.id).status == DeliveryStatus.QUEUED


def test_a_hard_bounce_suppresses_and_a_block_does_not(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    blocked = event("bounce", delivery, type="blocked", reason="550 blocked")
    assert signed_post(client, signer, [blocked]).status_code == 200
    assert supporter_of(delivery).status == SupporterStatus.SUBSCRIBED
    bounce = event("bounce", delivery, type="bounce", reason="550 5.1.1 no such user")
    assert signed_post(client, signer, [bounce]).status_code == 200
    supporter = supporter_of(delivery)
    assert supporter.status == SupporterStatus.BOUNCED
    assert [(c.kind, c.source) for c in supporter.consent_events][-1] == (
        "suppress",
        "sendgrid bounce",
    )


def test_a_bounce_for_a_transactional_email_finds_the_address(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    assert signed_post(client, signer, [event("bounce", None, type="bounce")]).status_code == 200
    assert supporter_of(delivery).status == SupporterStatus.BOUNCED


def test_deferred_and_content_drops_are_recorded_only(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    payload = [event("dropped", delivery, reason="Spam Content"), event("deferred", delivery)]
    assert signed_post(client, signer, payload).status_code == 200
    assert sorted(r.event_type for r in stored()) == ["deferred", "dropped"]
    assert all(r.processed_at is not None for r in stored())
    assert supporter_of(delivery).status == SupporterStatus.SUBSCRIBED


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("Bounced Address", SupporterStatus.BOUNCED),
        ("Invalid", SupporterStatus.BOUNCED),
        ("Spam Reporting Address", SupporterStatus.COMPLAINED),
        ("Unsubscribed Address", SupporterStatus.UNSUBSCRIBED),
    ],
)
def test_a_drop_for_a_suppressed_address_is_followed(
    client, signer, delivery, reason, status
) -> None:  # type: ignore[no-untyped-def]
    payload = [event("dropped", delivery, reason=reason)]
    assert signed_post(client, signer, payload).status_code == 200
    assert supporter_of(delivery).status == status


def test_a_spam_report_unsubscribes_and_suppresses(client, signer, delivery) -> None:  # type: ignore[no-untyped-def]
    assert signed_post(client, signer, [event("spamreport", delivery)]).status_code == 200
    supporter = supporter_of(delivery)
    assert supporter.status == SupporterStatus.COMPLAINED
    kinds = [c.kind for c in supporter.consent_events]
    assert "unsubscribe" in kinds and kinds[-1] == "suppress"


@pytest.mark.parametrize("kind", ["unsubscribe", "group_unsubscribe"])
def test_unsubscribes(client, signer, delivery, kind) -> None:  # type: ignore[no-untyped-def]
    assert signed_post(client, signer, [event(kind, delivery, asm_group_id=1)]).status_code == 200
    supporter = supporter_of(delivery)
    assert supporter.status == SupporterStatus.UNSUBSCRIBED
    assert supporter.consent_events[-1].source == f"sendgrid {kind}"


def test_sendgrid_opens_and_clicks_become_tracking_events_without_ip_or_agent(
    client, signer, delivery
) -> None:  # type: ignore[no-untyped-def]
    payload = [
        event("open", delivery, ip="198.51.100.7", useragent="Mozilla/5.0 (Macintosh)"),
        event("open", delivery, ip="17.0.0.1", useragent="Mozilla/5.0", sg_machine_open=True),
        event("click", delivery, ip="198.51.100.7", useragent="Firefox", url=LINK),
        event("click", delivery, url="https://not-ours.example/"),
    ]
    assert signed_post(client, signer, payload).status_code == 200
    db.session.expire_all()
    hits = db.session.scalars(select(TrackingEvent).order_by(TrackingEvent.id)).all()
    assert [(h.kind, h.link_position, h.machine) for h in hits] == [
        ("open", None, False),
        ("open", None, True),
        ("click", 0, False),
        ("click", None, False),
    ]
    for row in stored():  # privacy rule 4: never the reader's address or software
        assert "ip" not in row.payload and "useragent" not in row.payload
        assert "198.51.100" not in json.dumps(row.payload)


def test_events_wait_in_the_inbox_when_the_broker_is_down(
    client, signer, delivery, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def broker_down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(event_tasks.process_provider_events, "delay", broker_down)
    assert signed_post(client, signer, [event("spamreport", delivery)]).status_code == 200
    assert stored()[0].processed_at is None
    monkeypatch.undo()
    assert event_tasks.process_provider_events.delay().get() == 1
    assert supporter_of(delivery).status == SupporterStatus.COMPLAINED
    assert event_tasks.process_provider_events.delay().get() == 0
    count = db.session.scalar(
        select(func.count()).select_from(ConsentEvent).where(ConsentEvent.kind == "suppress")
    )
    assert count == 1
