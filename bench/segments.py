"""Benchmark segment counts: N supporters in PostgreSQL, each condition kind timed.

    .venv/bin/python bench/segments.py --supporters 1000000 [--explain] [--drop-after]

Seeds N supporters (set-based INSERT ... SELECT over generate_series) with a
realistic spread: statuses and snoozes, countries and postal codes, five years of
join dates, custom fields, 20 tags (one to two per person), 50 action pages with
about half a million actions, three sent mailings with deliveries, and opens
(a third flagged as machine opens) and clicks on them. Then it times
`segments.count()` for each condition kind and for combined definitions, the
median of 5 runs each, and prints a table against the target (< 1000 ms).

The database named by --database-url is the benchmark's own: it is created if
missing, and its schema is dropped and rebuilt by the migrations on every run
(--reuse times what the last run left instead). --drop-after drops the whole
database at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchkit import drop_database, reset_database  # noqa: E402

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/gs_bench_segments"
TARGET_MS = 1000.0
TAGS = 20
PAGES = 50
RUNS = 5


SUPPORTERS_SQL = """
INSERT INTO supporters (public_id, email, first_name, last_name, postal_code, country, status,
                        snoozed_until, source, custom_fields, created_at, updated_at)
SELECT md5('seg' || g), 'seg-' || g || '@example.org', 'P' || g, '',
       CASE WHEN g % 10 < 3 THEN (ARRAY['SW1A', 'sw19', 'M1', 'EH1', 'B2'])[1 + g % 5]
                                 || ' ' || (g % 9) || 'AA'
            ELSE lpad((g % 99999)::text, 5, '0') END,
       CASE WHEN g % 10 < 3 THEN 'GB' WHEN g % 10 < 8 THEN 'US' ELSE 'CA' END,
       CASE WHEN g % 100 < 88 THEN 'subscribed' WHEN g % 100 < 94 THEN 'unsubscribed'
            WHEN g % 100 < 96 THEN 'bounced' WHEN g % 100 < 97 THEN 'complained'
            ELSE 'not_subscribed' END,
       CASE WHEN g % 50 = 7 THEN now() + interval '20 days' END,
       'bench',
       CASE WHEN g % 10 = 3 THEN '{"volunteer": "yes"}' WHEN g % 10 = 4 THEN '{"volunteer": "no"}'
            ELSE '{}' END::json,
       now() - (g % 1826) * interval '1 day' - (g % 86400) * interval '1 second', now()
FROM generate_series(1, :n) AS g
"""

# Everyone has one tag; a third have a second one.
TAGS_SQL = """
INSERT INTO supporter_tags (supporter_id, tag_id)
SELECT s.id, t.id FROM (
    SELECT id, 1 + id % :tags AS tag FROM supporters
    UNION
    SELECT id, 1 + (id * 7 + 3) % :tags FROM supporters WHERE id % 3 = 0
) AS s JOIN tags t ON t.id = s.tag
ON CONFLICT DO NOTHING
"""

# About 40% took one action, 10% a second one, over the last two years.
ACTIONS_SQL = """
INSERT INTO actions (page_id, supporter_id, created_at, updated_at, comment, show_publicly,
                     public_name, letter_subject, letter_body, source, utm, referrer_host)
SELECT p.id, a.sid, now() - (a.sid % 730) * interval '1 day', now(), '', false, '', '', '',
       'direct', '{}', ''
FROM (
    SELECT id AS sid, 1 + (id * 13) % :pages AS page FROM supporters WHERE id % 5 IN (0, 1)
    UNION
    SELECT id, 1 + (id * 17 + 5) % :pages FROM supporters WHERE id % 10 = 0
) AS a JOIN action_pages p ON p.id = a.page
ON CONFLICT DO NOTHING
"""

DELIVERIES_SQL = """
INSERT INTO deliveries (mailing_id, supporter_id, variant, status, attempts, provider_message_id,
                        sent_at)
SELECT :mailing, id, 'a', 'sent', 1, '', :sent_at FROM supporters
WHERE status = 'subscribed' AND id % :every = 0
"""

# Opens on a fifth of deliveries (a third of them machine opens), clicks on a twentieth.
TRACKING_SQL = """
INSERT INTO tracking_events (delivery_id, kind, link_position, machine, created_at)
SELECT id, 'open', NULL, id % 3 = 0, :sent_at + (id % 3600) * interval '1 second'
FROM deliveries WHERE mailing_id = :mailing AND id % 5 = 0
UNION ALL
SELECT id, 'click', 0, false, :sent_at + (id % 7200) * interval '1 second'
FROM deliveries WHERE mailing_id = :mailing AND id % 20 = 0
"""


def seed(session: Any, n: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from app.actions.models import ActionPage
    from app.mailings.models import Mailing, MailingStatus
    from app.supporters.models import Tag
    from app.timeutil import utcnow

    now = utcnow()
    session.execute(sa.text(SUPPORTERS_SQL), {"n": n})
    session.add_all(Tag(name=f"tag-{i}") for i in range(1, TAGS + 1))
    session.add_all(
        ActionPage(kind="petition", slug=f"bench-{i}", title=f"Bench page {i}", status="live")
        for i in range(1, PAGES + 1)
    )
    mailings = [
        Mailing(subject=f"Bench {i}", body_md="Hi", status=MailingStatus.SENT) for i in range(3)
    ]
    session.add_all(mailings)
    session.flush()
    session.execute(sa.text(TAGS_SQL), {"tags": TAGS})
    session.execute(sa.text(ACTIONS_SQL), {"pages": PAGES})
    for mailing, every, days_ago in zip(mailings, (1, 2, 5), (3, 40, 200), strict=True):
        sent_at = now - timedelta(days=days_ago)
        session.execute(
            sa.text(DELIVERIES_SQL), {"mailing": mailing.id, "every": every, "sent_at": sent_at}
        )
        session.execute(sa.text(TRACKING_SQL), {"mailing": mailing.id, "sent_at": sent_at})
    session.commit()
    # VACUUM cannot run in a transaction; it also fills the visibility map that
    # index-only scans rely on, as a long-lived production table would have.
    with session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("supporters", "supporter_tags", "actions", "deliveries", "tracking_events"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
    return {"mailings": [m.id for m in mailings]}


def definitions(ids: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    m1, m2, _ = ids["mailings"]
    tags_any = {"type": "tags", "mode": "any", "tag_ids": [1, 2, 3]}
    took = {"type": "action", "took": True, "page_ids": [1, 2, 3, 4, 5]}
    gb = {"type": "location", "country": "GB", "postal_prefix": ""}
    engaged = {"type": "engaged", "days": 30}
    clicked = {"type": "mailing", "event": "clicked", "mailing_id": m1}
    opened = {"type": "mailing", "event": "opened", "mailing_id": m1}

    def only(cond: dict[str, Any]) -> dict[str, Any]:
        return {"match": "all", "include": [cond], "exclude": []}

    return [
        ("everyone", {"match": "all", "include": [], "exclude": []}),
        ("tags any of 3", only(tags_any)),
        ("tags all of 2", only({"type": "tags", "mode": "all", "tag_ids": [1, 4]})),
        ("tags none of 2", only({"type": "tags", "mode": "none", "tag_ids": [1, 2]})),
        ("took action (5 pages)", only(took)),
        ("did not take action", only({**took, "took": False, "page_ids": [1]})),
        ("joined in a year", only({"type": "joined", "from": "2023-01-01", "to": "2023-12-31"})),
        ("country GB", only(gb)),
        ("postal prefix sw1", only({"type": "location", "country": "", "postal_prefix": "sw1"})),
        ("received mailing", only({"type": "mailing", "event": "received", "mailing_id": m2})),
        ("opened mailing", only(opened)),
        ("clicked mailing", only(clicked)),
        ("engaged in 30 days", only(engaged)),
        (
            "custom field equals",
            only({"type": "custom_field", "field": "volunteer", "op": "equals", "value": "yes"}),
        ),
        (
            "combined (all + 2 exclusions)",
            {"match": "all", "include": [tags_any, gb, engaged], "exclude": [took, clicked]},
        ),
        (
            "combined (any of 3 + exclusion)",
            {"match": "any", "include": [tags_any, took, opened], "exclude": [gb]},
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supporters", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE for each")
    parser.add_argument("--drop-after", action="store_true", help="drop the database when done")
    parser.add_argument(
        "--reuse", action="store_true", help="time the data a previous run left (kept by default)"
    )
    args = parser.parse_args()

    import os

    if not args.reuse:
        reset_database(args.database_url)
    os.environ.update(
        GROUNDSWELL_INSTANCE=tempfile.mkdtemp(prefix="gs-bench-segments-"),
        GROUNDSWELL_ENV="development",
        DATABASE_URL=args.database_url,
    )
    from flask_migrate import upgrade
    from sqlalchemy import func, select

    from app import create_app
    from app.extensions import db
    from app.mailings.models import Mailing
    from app.supporters import segments
    from app.supporters.models import Supporter
    from app.timeutil import utcnow

    app = create_app()
    rows: list[tuple[str, str, str, float]] = []
    try:
        with app.app_context():
            if args.reuse:
                ids = {
                    "mailings": list(db.session.scalars(select(Mailing.id).order_by(Mailing.id)))
                }
                n = db.session.scalar(select(func.count()).select_from(Supporter))
                print(f"reusing {n:,} supporters")
            else:
                upgrade(directory=str(ROOT / "migrations"))
                started = time.monotonic()
                ids = seed(db.session, args.supporters)
                took = time.monotonic() - started
                print(f"seeded {args.supporters:,} supporters in {took:.1f} s")
            now = utcnow()
            for name, definition in definitions(ids):
                times: list[float] = []
                for _ in range(RUNS):
                    t0 = time.perf_counter()
                    result = segments.count(db.session, definition, now)
                    times.append((time.perf_counter() - t0) * 1000)
                    db.session.rollback()
                ms = statistics.median(times)
                rows.append((name, f"{result.mailable:,}", f"{result.matching:,}", ms))
                print(f"  {name}: {ms:.0f} ms", flush=True)
                if args.explain:
                    stmt = (
                        select(func.count())
                        .select_from(Supporter)
                        .where(segments.condition(definition, now))
                    )
                    compiled = stmt.compile(
                        dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True}
                    )
                    plan = (
                        db.session.connection()
                        .exec_driver_sql("EXPLAIN ANALYZE " + str(compiled), compiled.params)
                        .scalars()
                    )
                    print("\n".join("      " + line for line in plan))
                    db.session.rollback()
    finally:
        with app.app_context():
            db.engine.dispose()
        if args.drop_after:
            drop_database(args.database_url)

    width = max(len(r[0]) for r in rows)
    print()
    print(f"  {'condition':<{width}}  {'mailable':>10}  {'matching':>10}  {'ms':>6}  target")
    for name, mailable, matching, ms in rows:
        verdict = "ok" if ms < TARGET_MS else "SLOW"
        print(f"  {name:<{width}}  {mailable:>10}  {matching:>10}  {ms:>6.0f}  <1000 {verdict}")
    print()
    return 0 if all(r[3] < TARGET_MS for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
