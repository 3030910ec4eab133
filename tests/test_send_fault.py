"""kill -9 a worker in the middle of a mailing: after reconcile and a new worker, everyone
got it, and the only duplicates are the one chunk in flight, counted on the mailing.

A real `celery -A app.tasks worker` subprocess sends through the real `sendgrid`
library to the local fake SendGrid server, which answers slowly so the kill lands
while a chunk is in flight. PostgreSQL only (SKIP LOCKED, concurrent writers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.mailings import pipeline
from app.mailings.models import Mailing
from app.mailings.tasks import enqueue_chunks, send_mailing
from app.timeutil import utcnow
from tests.conftest import TEST_DATABASE_URL
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.test_worker import (  # noqa: F401 (the fixture)
    READY_TIMEOUT,
    Worker,
    web_app_with_broker,
    worker_env,
)

pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(not TEST_DATABASE_URL.startswith("postgresql"), reason="needs PostgreSQL"),
]

SUPPORTERS = 5_000
CHUNK = pipeline.CHUNK_SIZE
SEND_TIMEOUT = 120.0


class _CountingEvent(threading.Event):
    """The fake's stop event: each request waits on it for `delay`, so waits = requests begun."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def seed_supporters(count: int) -> None:
    db.session.execute(
        sa.text(
            """
            INSERT INTO supporters (public_id, email, first_name, last_name, postal_code, country,
                                    status, source, custom_fields, created_at, updated_at)
            SELECT md5('fault' || g), 'fault-' || g || '@example.org', 'Pat', '', '', 'US',
                   'subscribed', 'fault test', '{}', now(), now()
            FROM generate_series(1, :count) AS g
            """
        ),
        {"count": count},
    )
    db.session.commit()


def addresses(fake: FakeSendGrid) -> Counter[str]:
    return Counter(p["to"][0]["email"] for r in fake.accepted for p in r.json["personalizations"])


def wait_for(condition, timeout: float, what: str, worker: Worker | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{worker.log() if worker else ''}")
        time.sleep(0.05)


def kill_group(worker: Worker) -> None:
    if worker.process.poll() is None:
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)


def test_kill_9_mid_send_loses_nobody_and_counts_the_duplicates(
    app, web_app_with_broker, database_url, instance_dir, tmp_path
):
    seed_supporters(SUPPORTERS)
    mailing = pipeline.create_mailing(
        db.session, subject="Hello {{ first_name }}", body_md="Act **now**.", now=utcnow()
    )
    db.session.commit()
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    web = web_app_with_broker(broker_url)

    fake = FakeSendGrid()
    fake._stopping = _CountingEvent()  # count requests as they begin, before the delay
    fake.delay = 0.3
    workers: list[Worker] = []
    with fake:
        env = worker_env(app, database_url, instance_dir, broker_url)
        env.update(
            EMAIL_PROVIDER="sendgrid",
            SENDGRID_API_KEY=fake.api_key,
            SENDGRID_API_HOST=fake.url,
            MAILING_DAILY_CAP="1",
        )
        try:
            first = Worker(env, tmp_path / "first.log")
            workers.append(first)
            first.wait_ready(READY_TIMEOUT)
            with web.app_context():
                send_mailing.delay(mailing.id)

            # One chunk accepted and the next one in flight (the fake is sleeping on it).
            wait_for(
                lambda: len(fake.accepted) >= 1 and fake._stopping.waits >= 2,
                SEND_TIMEOUT,
                "a chunk in flight",
                first,
            )
            kill_group(first)
            assert len(addresses(fake)) < SUPPORTERS, "the send finished before the kill"

            # What the beat's `mailings.reconcile` does once the lease has passed.
            db.session.rollback()
            result = pipeline.reconcile(db.session, mailing.id, timedelta(0), utcnow())
            db.session.commit()
            assert 0 < result.requeued <= CHUNK
            with web.app_context():
                enqueue_chunks(mailing.id, result.requeued, None)

            second = Worker(env, tmp_path / "second.log")
            workers.append(second)
            second.wait_ready(READY_TIMEOUT)

            def finished() -> bool:
                db.session.rollback()
                return (
                    db.session.scalar(sa.select(Mailing.status).where(Mailing.id == mailing.id))
                    == "sent"
                )

            wait_for(finished, SEND_TIMEOUT, "the mailing to finish", second)
        finally:
            for worker in workers:
                kill_group(worker)

    got = addresses(fake)
    everyone = {f"fault-{i}@example.org" for i in range(1, SUPPORTERS + 1)}
    assert set(got) == everyone  # nobody skipped
    duplicates = sum(n - 1 for n in got.values())
    db.session.rollback()
    mailing = db.session.get(Mailing, mailing.id)
    assert duplicates <= CHUNK
    assert duplicates == mailing.duplicates_count == result.requeued
    assert pipeline.progress(db.session, mailing.id) == {"sent": SUPPORTERS}
