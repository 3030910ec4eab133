"""Batched tracking writes: a request only appends to its process's spool file; hits are
stored in batches (each once), survive a failing database, and a dead process's file is
drained by the beat task."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.mailings import tracking, tracking_views
from app.mailings.event_tasks import drain_tracking_spool
from app.timeutil import utcnow
from tests.mailings.test_tracking import (
    BROWSER,
    GMAIL_PROXY,
    LINKS,
    assert_pixel,
    click_path,
    events,
    make_delivery,
    open_url,
)


@pytest.fixture(autouse=True)
def _batched(app, monkeypatch):  # type: ignore[no-untyped-def]
    """Batched mode as in production, minus the threads: tests flush by hand."""
    monkeypatch.setitem(app.config, "TRACKING_WRITE_MODE", "batched")
    monkeypatch.setitem(app.config, "TRACKING_FLUSH_EACH_REQUEST", False)
    monkeypatch.setitem(app.config, "TRACKING_BACKGROUND_THREADS", False)
    monkeypatch.setitem(app.config, "TRACKING_SPOOL_INLINE_DRAIN", False)
    _reset(app)
    yield
    _reset(app)


def _reset(app) -> None:  # type: ignore[no-untyped-def]
    tracking.close_writers(drain=False)
    tracking.clear_link_cache()
    tracking.dispose_quick_engines()
    spool_dir = tracking.spool_dir_for(app.instance_path)
    for path in spool_dir.glob("*.jsonl") if spool_dir.is_dir() else []:
        path.unlink()


def _spool_dir(app) -> Path:  # type: ignore[no-untyped-def]
    return tracking.spool_dir_for(app.instance_path)


def _process_files(app) -> list[Path]:  # type: ignore[no-untyped-def]
    return sorted(_spool_dir(app).glob("events-*.jsonl"))


def _fail_inserts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT INTO tracking_events", {}, Exception("database is down"))

    monkeypatch.setattr(tracking, "insert_hit_batch", broken)
    monkeypatch.setattr(tracking, "insert_hits", broken)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _orphan_file(app, pid: int, hits: list[tracking.Hit]) -> Path:  # type: ignore[no-untyped-def]
    """A spool file as a batched-mode process leaves it when killed."""
    spool_dir = _spool_dir(app)
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"events-{socket.gethostname()}-{pid}-{time.time_ns()}.jsonl"
    path.write_text("".join(hit.to_json() + "\n" for hit in hits))
    return path


def test_requests_touch_no_database_and_a_flush_stores_each_hit(app, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    just_sent = make_delivery(sent_ago=timedelta(seconds=2))
    assert client.get(click_path(app, delivery, 1)).status_code == 302  # caches the link
    tracking.flush_now(app)
    assert len(events()) == 1

    def no_database(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the request asked the database")

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "quick_db", no_database)
        patch.setattr(tracking, "record_quickly", no_database)
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": BROWSER}))
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": GMAIL_PROXY}))
        assert_pixel(client.get(open_url(app, just_sent.id), headers={"User-Agent": BROWSER}))
        response = client.get(click_path(app, delivery, 1), headers={"User-Agent": BROWSER})
        assert response.status_code == 302 and response.headers["Location"] == LINKS[1]
    assert len(events()) == 1
    [path] = _process_files(app)
    assert path.name.startswith(f"events-{socket.gethostname()}-{os.getpid()}-")
    assert len(path.read_text().splitlines()) == 4

    assert tracking.flush_now(app) == 4
    rows = [(e.delivery_id, e.kind, e.link_position, e.machine) for e in events()]
    assert sorted(rows) == sorted(
        [
            (delivery.id, "click", 1, False),
            (delivery.id, "click", 1, False),
            (delivery.id, "open", None, False),
            (delivery.id, "open", None, True),  # a mail proxy
            (just_sent.id, "open", None, True),  # seconds after delivery
        ]
    )
    assert path.stat().st_size == 0  # fully drained: truncated by its owner
    assert tracking.flush_now(app) == 0


def test_a_click_on_a_link_not_cached_looks_it_up_and_still_404s_for_unknown(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    assert client.get(click_path(app, delivery, 5)).status_code == 404
    response = client.get(click_path(app, delivery, 0))
    assert response.status_code == 302 and response.headers["Location"] == LINKS[0]
    assert events() == []
    assert tracking.flush_now(app) == 1
    assert [(e.kind, e.link_position) for e in events()] == [("click", 0)]


def test_a_batch_is_stored_once_even_if_drained_twice(app) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    now = utcnow()
    hits = [
        tracking.Hit("open", delivery.id, now),
        tracking.Hit("open", delivery.id, now),  # the same line twice in one batch
        tracking.Hit("open", delivery.id, now + timedelta(seconds=1)),
        tracking.Hit("click", delivery.id, now, 1),
        tracking.Hit("click", delivery.id, now, 7),  # no such link
        tracking.Hit("open", delivery.id + 999, now),  # no such delivery
    ]
    assert tracking.insert_hit_batch(db.session, hits) == 3
    db.session.commit()
    assert tracking.insert_hit_batch(db.session, hits) == 0
    db.session.commit()

    # A process that stored its lines and was killed before truncating its file.
    writer = tracking.spool_writer(_spool_dir(app), db.engine, threads=False)
    for hit in hits:
        writer.append(hit)
    assert writer.drain() == 0
    path = _orphan_file(app, _dead_pid(), hits)
    assert drain_tracking_spool.delay().get() == 0
    assert not path.exists()
    assert len(events()) == 3


def test_a_killed_process_file_is_drained_by_the_beat_task(app) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    hits = [tracking.Hit("open", delivery.id, utcnow() + timedelta(seconds=i)) for i in range(3)]
    dead = _orphan_file(app, _dead_pid(), hits)
    with dead.open("a") as fh:
        fh.write('{"kind":"open","delivery_id":')  # a line torn by the kill
    live = _orphan_file(app, os.getppid(), [tracking.Hit("click", delivery.id, utcnow(), 0)])

    assert drain_tracking_spool.delay().get() == 3
    assert not dead.exists()
    assert live.exists() and len(events()) == 3  # its owner is alive and drains it itself

    # A file that has not grown for ORPHAN_AFTER is drained, but only its owner removes it.
    stale = time.time() - tracking.ORPHAN_AFTER - 1
    os.utime(live, (stale, stale))
    assert drain_tracking_spool.delay().get() == 1
    assert live.exists()
    assert drain_tracking_spool.delay().get() == 0
    assert len(events()) == 4


def test_the_beat_task_does_not_race_a_drain_in_progress(app) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    path = _orphan_file(app, _dead_pid(), [tracking.Hit("open", delivery.id, utcnow())])
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a drainer holds it
        assert drain_tracking_spool.delay().get() == 0
        assert path.exists() and events() == []
    finally:
        os.close(fd)
    assert drain_tracking_spool.delay().get() == 1


def test_no_event_is_lost_when_the_database_is_down_during_a_drain(
    app, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    assert_pixel(client.get(open_url(app, delivery.id)))
    assert client.get(click_path(app, delivery, 0)).status_code == 302
    writer = tracking.spool_writer(_spool_dir(app), db.engine, threads=False)
    with monkeypatch.context() as patch:
        _fail_inserts(patch)
        with pytest.raises(OperationalError):
            writer.drain()
        assert_pixel(client.get(open_url(app, delivery.id)))  # still answered, still kept
        with pytest.raises(OperationalError):
            tracking.flush_now(app)
    assert events() == []
    assert tracking.pending_spooled(_spool_dir(app)) == 3
    assert tracking.flush_now(app) == 3
    assert sorted(e.kind for e in events()) == ["click", "open", "open"]
    assert tracking.pending_spooled(_spool_dir(app)) == 0


def test_appends_after_a_truncate_are_drained_from_the_start(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    for round_ in range(3):
        for _ in range(round_ + 1):
            assert_pixel(client.get(open_url(app, delivery.id)))
        assert tracking.flush_now(app) == round_ + 1
    assert len(events()) == 6


def test_a_closed_writer_leaves_undrained_lines_for_the_beat_task(app, client) -> None:  # type: ignore[no-untyped-def]
    """Like a worker stopped while the database is away: the file stays until drained."""
    delivery = make_delivery()
    assert_pixel(client.get(open_url(app, delivery.id)))
    [path] = _process_files(app)
    tracking.close_writers(drain=False)
    assert path.exists()
    os.utime(path, (0, 0))  # its owner (this process) lives on: only age marks it orphaned
    assert drain_tracking_spool.delay().get() == 1
    # A new request gets a new writer and file: the closed one is never written again.
    assert_pixel(client.get(open_url(app, delivery.id)))
    assert tracking.flush_now(app) == 1
    assert len(events()) == 2


def test_threads_start_with_the_first_hit_and_store_it(app, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "TRACKING_BACKGROUND_THREADS", True)
    monkeypatch.setattr(tracking, "DRAIN_EVERY", 0.05)
    monkeypatch.setattr(tracking, "FSYNC_EVERY", 0.01)
    delivery = make_delivery()
    assert "tracking.writer" not in app.extensions or app.extensions["tracking.writer"].closed
    assert_pixel(client.get(open_url(app, delivery.id)))
    writer = app.extensions["tracking.writer"]
    assert sorted(t.name for t in writer._threads if t.is_alive()) == [
        "tracking-drain",
        "tracking-fsync",
    ]
    deadline = time.monotonic() + 10
    while not events() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(events()) == 1
    tracking.close_writers()
    assert not any(t.is_alive() for t in writer._threads)


def test_a_forked_process_gets_its_own_writer(app, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    assert_pixel(client.get(open_url(app, delivery.id)))
    parent = app.extensions["tracking.writer"]
    monkeypatch.setattr(tracking.os, "getpid", lambda: parent.pid + 1)
    monkeypatch.setattr(tracking_views.os, "getpid", lambda: parent.pid + 1)
    assert_pixel(client.get(open_url(app, delivery.id)))
    child = app.extensions["tracking.writer"]
    assert child is not parent and child.path != parent.path
    assert len(_process_files(app)) == 2


def test_direct_mode_stores_before_answering(app, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "TRACKING_WRITE_MODE", "direct")
    delivery = make_delivery()
    assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": GMAIL_PROXY}))
    response = client.get(click_path(app, delivery, 1))
    assert response.status_code == 302 and response.headers["Location"] == LINKS[1]
    assert sorted((e.kind, e.machine) for e in events()) == [("click", False), ("open", True)]
    assert _process_files(app) == []
