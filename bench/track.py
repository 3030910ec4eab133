"""Benchmark open-pixel and click tracking under wrk, against gunicorn and PostgreSQL.

    .venv/bin/python bench/track.py --duration 10 --connections 32 [--rounds 3] [--workers 2]
        [--mode batched|direct]

Seeds one sent mailing with N deliveries (default 10,000) and three links (one an
action page on BASE_URL, so clicks on it take the signed-token redirect), writes every
delivery's open and click URLs to files, and starts gunicorn on a free port of
127.0.0.1 serving bench/track_app.py: the product plus a bare `/bare.gif` (the same
pixel, no database work). wrk then drives each of the bare endpoint, the open pixel and
the click for the same duration and connections, its Lua script cycling through the
real tokens so every request is a real event.

--mode batched (the product's default) has each request append to its worker's spool
file, and the worker's own thread store the hits in batches about every second; after
each run the bench waits for the count to reach what wrk completed (at most
--drain-wait seconds), then drains whatever is left in the spool itself and counts.
--mode direct stores each hit before the response (one INSERT per request).

The table gives requests/s, the ratio to the bare endpoint, p50 and p99 latency, the
responses that were not 2xx/3xx, and the events stored against the requests wrk
completed. Targets (issue 4): at least 0.7 of the bare rate, p99 under 50 ms, every
event recorded. A request wrk had written when its clock stopped may still be answered
and stored by the server, so "every event recorded" means: completed <= stored <= sent.

--rounds N repeats bare, open and click N times, interleaved, and reports the totals
(median p50, worst p99): steadier when other work shares the machine.

The database named by --database-url is the benchmark's own: its schema is dropped
and rebuilt by the migrations on every run. wrk comes from Debian: apt-get install -y wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchkit import reset_database, stop  # noqa: E402

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/gs_bench_track"
BASE_URL = "https://bench.example"
LINKS = [
    f"{BASE_URL}/a/bench-petition?src=email",  # one of ours: redirected with t= and mid=
    "https://example.org/about",
    "https://example.org/news#latest",
]
TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0

# Cycles through the paths in the file named by the first script argument, each wrk
# thread starting at its own place; prints one machine-readable line at the end.
LUA = r"""
local paths, n, i = {}, 0, 0
local threads, counter = {}, 0
sent = 0

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then n = n + 1; paths[n] = line end
  end
  i = (offset * 7919) % n
end

function request()
  i = i % n + 1
  sent = sent + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("sent") end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d sent=%d duration_us=%d p50_us=%d p99_us=%d status=%d " ..
    "connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, total, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class Run:
    name: str
    requests: int
    sent: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad_status: int
    socket_errors: int
    stored: int | None = None  # events of this kind added during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


ENDPOINTS = (("bare /bare.gif", None), ("open /o/<t>.gif", "open"), ("click /c/<t>", "click"))


def combine(runs: list[Run]) -> Run:
    """One endpoint over interleaved rounds: totals, the median p50 and the worst p99."""
    stored = [run.stored for run in runs if run.stored is not None]
    return Run(
        name=runs[0].name,
        requests=sum(run.requests for run in runs),
        sent=sum(run.sent for run in runs),
        seconds=sum(run.seconds for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        bad_status=sum(run.bad_status for run in runs),
        socket_errors=sum(run.socket_errors for run in runs),
        stored=sum(stored) if stored else None,
    )


def seed(session: Any, count: int) -> tuple[int, list[tuple[int, str]]]:
    """One sent mailing with `count` deliveries (sent an hour ago) and LINKS; its id and
    the delivery ids with their readers' public ids."""
    import sqlalchemy as sa

    from app.mailings.models import Mailing, MailingLink
    from app.timeutil import utcnow

    session.execute(
        sa.text(
            """
            INSERT INTO supporters (public_id, email, first_name, last_name, postal_code, country,
                                    status, source, custom_fields, created_at, updated_at)
            SELECT md5('track' || g), 'track-' || g || '@example.org', 'Ada', '', '', 'US',
                   'subscribed', 'bench', '{}', now(), now()
            FROM generate_series(1, :count) AS g
            """
        ),
        {"count": count},
    )
    now = utcnow()
    mailing = Mailing(subject="Bench", status="sent", started_at=now, finished_at=now)
    session.add(mailing)
    session.flush()
    for position, url in enumerate(LINKS):
        session.add(MailingLink(mailing_id=mailing.id, position=position, url=url))
    session.execute(
        sa.text(
            """
            INSERT INTO deliveries (mailing_id, supporter_id, variant, status, attempts,
                                    claimed_at, sent_at, provider_message_id)
            SELECT :mailing, id, 'a', 'sent', 1, :claimed, :sent, '' FROM supporters
            """
        ),
        {
            "mailing": mailing.id,
            "claimed": now - timedelta(hours=2),
            "sent": now - timedelta(hours=1),
        },
    )
    session.commit()
    for table in ("supporters", "deliveries", "mailing_links"):
        session.execute(sa.text(f"ANALYZE {table}"))
    session.commit()
    rows = session.execute(
        sa.text(
            "SELECT d.id, s.public_id FROM deliveries d JOIN supporters s ON s.id = d.supporter_id"
            " ORDER BY d.id"
        )
    )
    return mailing.id, [(int(d), str(p)) for d, p in rows]


def write_paths(
    directory: Path, secret_key: str, mailing_id: int, ids: list[tuple[int, str]]
) -> dict[str, Path]:
    from app.mailings import tracking

    files = {
        "bare": ["/bare.gif"],
        "open": [f"/o/{tracking.make_open_token(secret_key, d)}.gif" for d, _ in ids],
        # As the send makes them: links to our action pages carry the reader's public id.
        "click": [
            "/c/"
            + tracking.make_click_token(
                secret_key,
                d,
                mailing_id,
                d % len(LINKS),
                reader if tracking.is_action_page(LINKS[d % len(LINKS)], BASE_URL) else "",
            )
            for d, reader in ids
        ],
    }
    paths = {}
    for name, lines in files.items():
        paths[name] = directory / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, log_dir: Path
) -> subprocess.Popen[bytes]:
    log = (log_dir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(ROOT / "bench"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--access-logfile",
            str(log_dir / "access.log"),  # as the Procfile logs each request (to stdout there)
            "track_app:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited early; see {log_dir / 'gunicorn.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/bare.gif", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise SystemExit(f"gunicorn did not answer in 30 s; see {log_dir / 'gunicorn.log'}")


def run_wrk(name: str, url: str, script: Path, paths: Path, args: argparse.Namespace) -> Run:
    command = [
        "wrk",
        f"--threads={args.wrk_threads}",
        f"--connections={args.connections}",
        f"--duration={args.duration}s",
        "--timeout=5s",
        "--latency",
        f"--script={script}",
        url,
        "--",
        str(paths),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^BENCH (.*)$", output, re.MULTILINE)
    if match is None:
        raise SystemExit(f"wrk printed no summary:\n{output}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    return Run(
        name=name,
        requests=values["requests"],
        sent=values["sent"],
        seconds=values["duration_us"] / 1e6,
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        bad_status=values["status"],
        socket_errors=sum(values[k] for k in ("connect", "read", "write", "timeout")),
    )


def count_events(session: Any, kind: str) -> int:
    import sqlalchemy as sa

    return int(
        session.scalar(sa.text("SELECT count(*) FROM tracking_events WHERE kind = :k"), {"k": kind})
    )


def wait_for_events(session: Any, kind: str, expected: int, timeout: float) -> None:
    """Until `expected` events of `kind` are stored, the count stops growing for two of
    the workers' drain periods, or `timeout` passes (requests still in the server when wrk
    stopped, hits still in the workers' spool files)."""
    deadline = time.monotonic() + timeout
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = count_events(session, kind)
        session.commit()  # a fresh snapshot next time
        if count >= expected:
            return
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since > 2.5:
            return
        time.sleep(0.2)


def print_table(runs: list[Run], drained: int) -> bool:
    bare = runs[0].rate
    header = (
        "endpoint",
        "req/s",
        "vs bare",
        "p50 ms",
        "p99 ms",
        "non-2xx/3xx",
        "socket err",
        "stored / completed (sent)",
        "verdict",
    )
    rows = [header]
    all_pass = True
    for run in runs:
        ratio = run.rate / bare if bare else 0.0
        if run.stored is None:
            stored, verdict = "-", ""
        else:
            recorded = run.requests <= run.stored <= run.sent
            misses = [
                label
                for label, ok in (
                    (f"rate < {TARGET_RATIO}", ratio >= TARGET_RATIO),
                    (f"p99 >= {TARGET_P99_MS:.0f} ms", run.p99_ms < TARGET_P99_MS),
                    ("errors", run.bad_status == 0 and run.socket_errors == 0),
                    ("events lost", recorded),
                )
                if not ok
            ]
            all_pass = all_pass and not misses
            stored = f"{run.stored:,} / {run.requests:,} ({run.sent:,})"
            verdict = "PASS" if not misses else "MISS: " + ", ".join(misses)
        rows.append(
            (
                run.name,
                f"{run.rate:,.0f}",
                f"{ratio:.2f}",
                f"{run.p50_ms:.1f}",
                f"{run.p99_ms:.1f}",
                f"{run.bad_status:,}",
                f"{run.socket_errors:,}",
                stored,
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\n  events the bench drained from the spool itself after the runs: {drained:,}")
    print(
        f"  targets: >= {TARGET_RATIO} of bare req/s, p99 < {TARGET_P99_MS:.0f} ms, "
        "every event stored\n"
    )
    return all_pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile: 2)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat bare, open, click this many times, interleaved (steadier on a busy machine)",
    )
    parser.add_argument(
        "--mode",
        choices=("batched", "direct"),
        default="batched",
        help="TRACKING_WRITE_MODE of the server (default: batched, the product's default)",
    )
    parser.add_argument(
        "--drain-wait",
        type=float,
        default=10.0,
        help="seconds to wait for the workers to store a run's hits before counting",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, tokens)")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed; on Debian: apt-get install -y wrk", file=sys.stderr)
        return 2

    reset_database(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="gs-bench-track-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "SENDGRID_"))}
    env.update(
        GROUNDSWELL_INSTANCE=str(workdir / "instance"),
        GROUNDSWELL_ENV="production",
        ORG_NAME="Bench",
        ORG_POSTAL_ADDRESS="1 Bench Street",
        MAIL_FROM="Bench <bench@example.org>",
        DATABASE_URL=args.database_url,
        SECRET_KEY=secrets.token_urlsafe(32),
        BASE_URL=BASE_URL,
        PYTHONUNBUFFERED="1",
        TRACKING_WRITE_MODE=args.mode,
    )
    os.environ.update(env)

    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.mailings import tracking

    app = create_app()
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        mailing_id, ids = seed(db.session, args.deliveries)
        paths = write_paths(workdir, app.config["SECRET_KEY"], mailing_id, ids)
    script = workdir / "track.lua"
    script.write_text(LUA)

    port = free_port()
    server = start_gunicorn(env, port, args.workers, args.threads, workdir)
    base = f"http://127.0.0.1:{port}"
    rounds: list[list[Run]] = []
    drained = 0
    spool_dir = tracking.spool_dir_for(app.instance_path)
    try:
        run_wrk("warm-up", base, script, paths["bare"], _short(args))
        for _ in range(args.rounds):
            runs = []
            for name, kind in ENDPOINTS:
                with app.app_context():
                    before = count_events(db.session, kind) if kind else 0
                run = run_wrk(name, base, script, paths[kind or "bare"], args)
                if kind:
                    with app.app_context():
                        wait_for_events(db.session, kind, before + run.requests, args.drain_wait)
                        drained += tracking.drain_spool(db.session, spool_dir)
                        run.stored = count_events(db.session, kind) - before
                runs.append(run)
            rounds.append(runs)
    finally:
        stop(server)
    if len(rounds) > 1:
        print()
        for number, runs in enumerate(rounds, 1):
            rates = "  ".join(f"{run.name.split()[0]} {run.rate:,.0f}" for run in runs)
            print(f"  round {number} req/s: {rates}")
    runs = [combine(list(same)) for same in zip(*rounds, strict=True)]
    print(
        f"\n  TRACKING_WRITE_MODE={args.mode}; {args.workers} gunicorn workers x {args.threads} "
        f"threads; wrk {args.connections} connections, {args.duration} s x {args.rounds} rounds"
    )
    ok = print_table(runs, drained)
    if args.keep:
        print(f"  logs and tokens in {workdir}\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "duration": 2})


if __name__ == "__main__":
    raise SystemExit(main())
