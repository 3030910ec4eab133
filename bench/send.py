"""Benchmark the send pipeline: N supporters, 2 real Celery workers on Redis, a local SendGrid.

    .venv/bin/python bench/send.py --supporters 50000

Seeds N subscribed supporters in PostgreSQL (one set-based INSERT ... SELECT),
starts the fake SendGrid v3 server from the tests in this process, starts two
`celery -A app.tasks worker` processes on Redis (`--concurrency N` pool
processes each, as the Procfile's worker; 1 = the solo pool), queues the
mailing and waits until every recipient has been accepted. It prints the
recipients per second from the send to the last chunk accepted, the time to
the first chunk, and each worker's peak resident memory (VmHWM, the worker
and its pool processes summed).

The database named by --database-url is the benchmark's own: its schema is
dropped and rebuilt by the migrations on every run. So is the Redis database
number given by --redis-db (it is flushed).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchkit import reset_database, stop  # noqa: E402
from tests.fakes.sendgrid_server import FakeSendGrid, ReceivedRequest  # noqa: E402

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/gs_bench_send"


class CountingSendGrid(FakeSendGrid):
    """The fake SendGrid, keeping counts and times instead of every request body."""

    def __init__(self) -> None:
        super().__init__()
        self.recipients = 0
        self.first_accept: float | None = None
        self.last_accept: float | None = None
        self.counter_lock = threading.Lock()

    def _answer(self, request: ReceivedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers, payload = super()._answer(request)
        if status == 202:
            now = time.monotonic()
            with self.counter_lock:
                self.recipients += len(request.json["personalizations"])
                self.first_accept = self.first_accept or now
                self.last_accept = now
        request.body, request.json = b"", None  # a million recipients would not fit in memory
        return status, headers, payload


def seed(session: Any, count: int) -> None:
    import sqlalchemy as sa

    session.execute(
        sa.text(
            """
            INSERT INTO supporters (public_id, email, first_name, last_name, postal_code, country,
                                    status, source, custom_fields, created_at, updated_at)
            SELECT md5('bench' || g), 'bench-' || g || '@example.org',
                   (ARRAY['Amina','Ben','Chloé','Dev','Elif','Farid'])[1 + g % 6], '', '', 'US',
                   'subscribed', 'bench', '{}', now(), now()
            FROM generate_series(1, :count) AS g
            """
        ),
        {"count": count},
    )
    session.commit()
    session.execute(sa.text("ANALYZE supporters"))
    session.commit()


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a worker and its pool processes, summed, in MB."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return _vm_hwm_mb(pid) + sum(_vm_hwm_mb(int(child)) for child in children)


def start_worker(
    env: dict[str, str], name: str, log_dir: Path, concurrency: int
) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    pool = ["--pool", "solo"] if concurrency <= 1 else ["--concurrency", str(concurrency)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "app.tasks",
            "worker",
            *pool,
            "--loglevel",
            "WARNING",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supporters", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=2, help="processes per worker (1 = solo pool)"
    )
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds (default: scaled)")
    args = parser.parse_args()
    timeout = args.timeout or max(120.0, args.supporters / 1000.0)

    import redis

    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(broker).flushdb()
    reset_database(args.database_url)

    instance = Path(tempfile.mkdtemp(prefix="gs-bench-"))
    fake = CountingSendGrid().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "SENDGRID_"))}
    env.update(
        GROUNDSWELL_INSTANCE=str(instance),
        GROUNDSWELL_ENV="development",
        DATABASE_URL=args.database_url,
        CELERY_BROKER_URL=broker,
        SECRET_KEY=secrets.token_urlsafe(32),
        BASE_URL="https://bench.example",
        EMAIL_PROVIDER="sendgrid",
        SENDGRID_API_KEY=fake.api_key,
        SENDGRID_API_HOST=fake.url,
        MAILING_DAILY_CAP="0",
        PYTHONUNBUFFERED="1",
    )
    os.environ.update(env)

    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.mailings import pipeline
    from app.mailings.tasks import send_mailing
    from app.timeutil import utcnow

    app = create_app()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
            started = time.monotonic()
            seed(db.session, args.supporters)
            seeded_in = time.monotonic() - started
            mailing = pipeline.create_mailing(
                db.session,
                subject="Act now, {{ first_name }}",
                body_md="Hello {{ first_name }},\n\nPlease [sign](https://bench.example/a/x).",
                now=utcnow(),
            )
            db.session.commit()
            mailing_id = mailing.id

        workers = [
            start_worker(env, f"bench{i}", instance, args.concurrency) for i in range(args.workers)
        ]
        time.sleep(5)  # let the workers connect before the clock starts
        for worker in workers:
            if worker.poll() is not None:
                raise SystemExit(f"a worker exited early; see {instance}")

        with app.app_context():
            sent_at = time.monotonic()
            send_mailing.delay(mailing_id)
        deadline = sent_at + timeout
        while fake.recipients < args.supporters and time.monotonic() < deadline:
            time.sleep(0.2)
        peaks = [peak_rss_mb(w.pid) for w in workers]
    finally:
        for worker in workers:
            stop(worker)
        fake.stop()

    done = fake.recipients
    if fake.first_accept is None or fake.last_accept is None:
        print(f"no chunk was accepted in {timeout:.0f} s; worker logs in {instance}")
        return 1
    elapsed = fake.last_accept - sent_at
    rows = [
        ("supporters seeded", f"{args.supporters:,} in {seeded_in:.1f} s"),
        ("recipients accepted", f"{done:,}" + ("" if done >= args.supporters else " (timed out)")),
        ("send to last chunk", f"{elapsed:.1f} s"),
        ("recipients/s", f"{done / elapsed:,.0f}  (target >= 10,000)"),
        ("time to first chunk", f"{fake.first_accept - sent_at:.2f} s  (target <= 2 s)"),
        *(
            (f"worker {i} peak RSS", f"{peak:.0f} MB  (target < 512 MB)")
            for i, peak in enumerate(peaks)
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()
    return 0 if done >= args.supporters else 1


if __name__ == "__main__":
    raise SystemExit(main())
