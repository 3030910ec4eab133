"""A welcome email goes out through a real Celery worker, and sign-up never waits for one.

The worker is the Procfile's `worker` command, run as a subprocess on the test
database with a broker in a SQLite file (kombu's SQLAlchemy transport, as `make run`
uses). The web side is the Flask test client of an app that is not eager.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app.extensions import celery_init_app, db
from app.mailings.models import EmailLog
from app.supporters import service as supporters
from app.supporters.models import Supporter
from app.timeutil import utcnow
from tests.conftest import ROOT, csrf_token
from tests.fakes import free_port

pytestmark = pytest.mark.worker

READY_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def procfile_worker_args() -> list[str]:
    """The Procfile's worker arguments after `celery -A app.tasks worker`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "worker":
            argv = shlex.split(command)
            assert argv[:4] == ["celery", "-A", "app.tasks", "worker"], argv
            return argv[4:]
    raise AssertionError("the Procfile has no worker process")


def worker_cli_args(procfile_args: list[str], log_path: Path) -> list[str]:
    """The Procfile's options, with one solo process and a log file the test can read."""
    replaced = {"--concurrency", "-c", "--hostname", "-n", "--loglevel", "-l", "--pool", "-P"}
    kept: list[str] = []
    skip = False
    for arg in procfile_args:
        if skip:
            skip = False
            continue
        if arg in replaced:
            skip = True
            continue
        if arg.split("=", 1)[0] in replaced:
            continue
        kept.append(arg)
    return [
        *kept,
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "--hostname",
        f"test-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--logfile",
        str(log_path),
    ]


class Worker:
    """`celery -A app.tasks worker` in its own process group; always stopped."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        args = worker_cli_args(procfile_worker_args(), log_path)
        self.console = log_path.with_suffix(".console")
        with self.console.open("wb") as console:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "app.tasks", "worker", *args],
                cwd=ROOT,
                env=env,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.log_path, self.console) if p.exists()]
        return "\n".join(parts)[-6000:]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited early:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"the worker was not ready in {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> int:
        """Warm shutdown (SIGTERM), bounded; the whole group is killed if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
                raise AssertionError(f"the worker ignored SIGTERM:\n{self.log()}") from None
        return self.process.returncode


def worker_env(
    app: Flask, database_url: str, instance_dir: Path, broker_url: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "SENDGRID_"))}
    env.update(
        GROUNDSWELL_INSTANCE=str(instance_dir),
        GROUNDSWELL_ENV="development",
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        SECRET_KEY=app.config["SECRET_KEY"],
        OUTBOX_DIR=app.config["OUTBOX_DIR"],
        BASE_URL=app.config["BASE_URL"],
        EMAIL_PROVIDER="outbox",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def web_app_with_broker(make_app, app) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Build a non-eager web app on a given broker; put the test app back afterwards."""
    built: list[Flask] = []

    def build(broker_url: str) -> Flask:
        celery_config = {**app.config["CELERY"], "task_always_eager": False}
        celery_config["broker_url"] = broker_url
        web = make_app(CELERY=celery_config)
        built.append(web)
        return web

    yield build
    for web in built:
        web.extensions["celery"].close()  # the producer's broker connections
        with web.app_context():
            db.engine.dispose()
    celery_init_app(app)


def sign_up(web: Flask, address: str) -> None:
    client = web.test_client()
    response = client.post(
        "/signup",
        data={
            "csrf_token": csrf_token(client),
            "email": address,
            "first_name": "Wren",
            "birth_year": "1990",
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]


def _welcome_log(address: str) -> tuple[Supporter | None, EmailLog | None]:
    db.session.rollback()  # a fresh snapshot: the worker writes from another process
    supporter = db.session.scalar(select(Supporter).where(Supporter.email == address))
    if supporter is None:
        return None, None
    row = db.session.scalar(select(EmailLog).where(EmailLog.supporter_id == supporter.id))
    return supporter, row


def test_welcome_email_goes_out_through_a_real_worker(
    app, outbox, web_app_with_broker, database_url, instance_dir, tmp_path
):
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    worker = Worker(worker_env(app, database_url, instance_dir, broker_url), tmp_path / "w.log")
    try:
        worker.wait_ready(READY_TIMEOUT)
        web = web_app_with_broker(broker_url)
        address = "wren@example.org"

        sign_up(web, address)

        deadline = time.monotonic() + DELIVERY_TIMEOUT
        supporter, row = _welcome_log(address)
        assert supporter is not None  # the sign-up committed before anything was queued
        while (row is None or row.status != "sent") and time.monotonic() < deadline:
            time.sleep(0.25)
            supporter, row = _welcome_log(address)
        assert row is not None and row.status == "sent", worker.log()
    finally:
        code = worker.stop()
    assert code == 0, worker.log()

    assert supporter is not None and supporter.welcomed_at is not None
    assert row.dedupe_key == f"welcome:{supporter.id}" and row.provider == "outbox"
    [entry] = outbox.entries()
    assert entry.to == address
    assert row.provider_message_id in entry.name
    message = outbox.read(entry.name)
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert "supporters.send_welcome" in worker.log()


def test_sign_up_succeeds_when_the_broker_is_unreachable(app, outbox, web_app_with_broker, caplog):
    web = web_app_with_broker(f"redis://127.0.0.1:{free_port()}/0")
    address = "offline@example.org"

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="app.supporters.tasks"):
        sign_up(web, address)
    elapsed = time.monotonic() - started

    assert elapsed < 15, f"sign-up waited {elapsed:.1f} s for the broker"
    supporter, row = _welcome_log(address)
    assert supporter is not None and supporter.welcomed_at is None
    assert row is None and outbox.entries() == []
    [record] = [r for r in caplog.records if r.name == "app.supporters.tasks"]
    assert "could not queue welcome email" in record.getMessage()
    assert address not in caplog.text  # the log names the supporter by id only
    # The beat sweep owes this supporter a welcome once the grace period has passed.
    later = utcnow() + supporters.WELCOME_SWEEP_AFTER * 2
    assert supporters.pending_welcome_ids(db.session, later) == [supporter.id]
