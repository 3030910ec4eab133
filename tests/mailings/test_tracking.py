"""Open pixel and click redirect: signed tokens, machine opens, no open redirect, no lost events."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.mailings import tracking
from app.mailings.event_tasks import drain_tracking_spool
from app.mailings.models import Delivery, DeliveryStatus, Mailing, MailingLink, TrackingEvent
from app.mailings.tracking_views import PIXEL
from app.timeutil import utcnow
from tests.factories import SupporterFactory

LINKS = ["https://example.org/a/save-the-river?src=email", "https://example.org/about"]
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"


def _empty_spool(app) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tracking.spool_dir_for(app.instance_path)
    for path in spool_dir.glob("*.jsonl") if spool_dir.is_dir() else []:
        path.unlink()


@pytest.fixture(autouse=True, params=["direct", "batched"])
def write_mode(request, app, monkeypatch):  # type: ignore[no-untyped-def]
    """Every test here runs in both write modes (batched: each hit stored right after its
    request, as TRACKING_FLUSH_EACH_REQUEST does under TESTING; test_tracking_batched.py
    tests the buffering itself)."""
    monkeypatch.setitem(app.config, "TRACKING_WRITE_MODE", request.param)
    monkeypatch.setitem(app.config, "TRACKING_SPOOL_INLINE_DRAIN", False)
    tracking.close_writers(drain=False)
    tracking.clear_link_cache()
    _empty_spool(app)
    yield request.param
    tracking.close_writers(drain=False)
    tracking.clear_link_cache()
    tracking.dispose_quick_engines()
    _empty_spool(app)


@pytest.fixture
def direct_only(write_mode: str) -> None:
    """For what only direct mode does (store before answering, spool on failure)."""
    if write_mode != "direct":
        pytest.skip("direct mode's own behaviour")


def make_delivery(sent_ago: timedelta | None = timedelta(hours=1), links=LINKS) -> Delivery:  # type: ignore[no-untyped-def]
    supporter = SupporterFactory()
    mailing = Mailing(subject="Save the river", status="sent")
    db.session.add(mailing)
    db.session.flush()
    for position, url in enumerate(links):
        db.session.add(MailingLink(mailing_id=mailing.id, position=position, url=url))
    delivery = Delivery(
        mailing_id=mailing.id,
        supporter_id=supporter.id,
        status=DeliveryStatus.SENT if sent_ago is not None else DeliveryStatus.SENDING,
        sent_at=utcnow() - sent_ago if sent_ago is not None else None,
        claimed_at=utcnow() - timedelta(hours=2),
    )
    db.session.add(delivery)
    db.session.commit()
    return delivery


def events() -> list[TrackingEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(TrackingEvent).order_by(TrackingEvent.id)))


def open_url(app, delivery_id: int) -> str:  # type: ignore[no-untyped-def]
    return f"/o/{tracking.make_open_token(app.config['SECRET_KEY'], delivery_id)}.gif"


def click_path(app, delivery: Delivery, position: int) -> str:  # type: ignore[no-untyped-def]
    token = tracking.make_click_token(
        app.config["SECRET_KEY"], delivery.id, delivery.mailing_id, position
    )
    return f"/c/{token}"


def assert_pixel(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    assert response.mimetype == "image/gif"
    assert response.data == PIXEL
    assert response.data.startswith(b"GIF89a") and len(PIXEL) == 43
    assert "no-store" in response.headers["Cache-Control"]
    assert "no-cache" in response.headers["Cache-Control"]


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_round_trip_and_carry_only_ids(app) -> None:  # type: ignore[no-untyped-def]
    key = app.config["SECRET_KEY"]
    open_token = tracking.make_open_token(key, 42)
    click_token = tracking.make_click_token(key, 42, 7, 3)
    assert tracking.read_open_token(key, open_token) == 42
    assert tracking.read_click_token(key, click_token) == tracking.ClickTarget(42, 7, 3)
    # The payload is only numbers: nothing about the person.
    payload = click_token.split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert struct.unpack(">QQH", raw) == (42, 7, 3)


def test_forged_and_crossed_tokens_are_refused(app) -> None:  # type: ignore[no-untyped-def]
    key = app.config["SECRET_KEY"]
    open_token = tracking.make_open_token(key, 42)
    click_token = tracking.make_click_token(key, 42, 7, 3)
    forged_payload = base64.urlsafe_b64encode(struct.pack(">QQH", 42, 7, 4)).decode().rstrip("=")
    forged = forged_payload + "." + click_token.split(".")[1]
    assert tracking.read_click_token(key, forged) is None
    # Another spelling of the same bytes (base64 padding) is not accepted either.
    assert tracking.read_click_token(key, click_token.replace(".", "=.", 1)) is None
    assert tracking.read_open_token(key, open_token[:-2] + "xx") is None
    assert tracking.read_open_token("another key", open_token) is None
    # Each kind has its own salt: an open token is no click token, and the reverse.
    assert tracking.read_click_token(key, open_token) is None
    assert tracking.read_open_token(key, click_token) is None
    assert tracking.read_open_token(key, "") is None
    assert tracking.read_open_token(key, "x" * 500) is None


def test_machine_user_agents() -> None:
    assert tracking.is_proxy_user_agent(GMAIL_PROXY)
    assert tracking.is_proxy_user_agent(
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy"
    )
    assert tracking.is_proxy_user_agent("Mozilla/5.0")  # Apple Mail Privacy Protection
    assert not tracking.is_proxy_user_agent(BROWSER)
    assert not tracking.is_proxy_user_agent("")
    assert not tracking.is_proxy_user_agent(None)


# --- opens ----------------------------------------------------------------------------------


def test_open_pixel_records_first_and_repeat_opens(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    url = open_url(app, delivery.id)
    assert_pixel(client.get(url, headers={"User-Agent": BROWSER}))
    assert_pixel(client.get(url, headers={"User-Agent": BROWSER}))
    rows = events()
    assert [(e.delivery_id, e.kind, e.machine) for e in rows] == [
        (delivery.id, "open", False),
        (delivery.id, "open", False),
    ]


def test_opens_from_mail_proxies_and_right_after_delivery_are_machine(app, client) -> None:  # type: ignore[no-untyped-def]
    proxied = make_delivery()
    assert_pixel(client.get(open_url(app, proxied.id), headers={"User-Agent": GMAIL_PROXY}))
    apple = make_delivery()
    assert_pixel(client.get(open_url(app, apple.id), headers={"User-Agent": "Mozilla/5.0"}))
    just_sent = make_delivery(sent_ago=timedelta(seconds=2))
    assert_pixel(client.get(open_url(app, just_sent.id), headers={"User-Agent": BROWSER}))
    machine = {e.delivery_id: e.machine for e in events()}
    assert machine == {proxied.id: True, apple.id: True, just_sent.id: True}


def test_bad_tokens_still_get_the_pixel_and_record_nothing(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    assert_pixel(client.get("/o/not-a-token.gif"))
    assert_pixel(client.get(open_url(app, delivery.id)[:-8] + "tampered.gif"))
    assert_pixel(client.get(open_url(app, delivery.id + 1000)))  # signed, but no such delivery
    assert events() == []


def test_nothing_about_the_reader_is_stored(app, client) -> None:  # type: ignore[no-untyped-def]
    """Privacy rule 4: no IP address, no user agent, only the machine flag."""
    columns = {c["name"] for c in inspect(db.engine).get_columns("tracking_events")}
    assert columns == {"id", "delivery_id", "kind", "link_position", "machine", "created_at"}
    delivery = make_delivery()
    client.get(
        open_url(app, delivery.id),
        headers={"User-Agent": "Secret-Agent/1.0"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    values = [str(v) for e in events() for v in (e.kind, e.link_position, e.machine, e.created_at)]
    assert not any("203.0.113" in v or "Secret-Agent" in v for v in values)


# --- clicks ---------------------------------------------------------------------------------


def test_click_records_and_redirects_to_exactly_the_stored_link(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    response = client.get(click_path(app, delivery, 0), headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    assert response.headers["Location"] == LINKS[0]
    response = client.get(click_path(app, delivery, 1))
    assert response.headers["Location"] == LINKS[1]
    assert [(e.kind, e.link_position, e.machine) for e in events()] == [
        ("click", 0, False),
        ("click", 1, False),
    ]


def test_no_open_redirect(app, client) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    other = make_delivery(links=["https://evil.example/phish", "https://x", "https://y"])
    key = app.config["SECRET_KEY"]
    # A position the mailing does not hold.
    assert client.get(click_path(app, delivery, 2)).status_code == 404
    # A forged token (a position changed, the signature kept).
    token = tracking.make_click_token(key, delivery.id, delivery.mailing_id, 0)
    forged = (
        base64.urlsafe_b64encode(
            json.dumps([delivery.id, other.mailing_id, 0], separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )
    assert client.get(f"/c/{forged}.{token.split('.')[1]}").status_code == 404
    assert client.get("/c/https%3A%2F%2Fevil.example").status_code == 404
    # An open token is not a click token.
    assert client.get(f"/c/{tracking.make_open_token(key, delivery.id)}").status_code == 404
    # A signed token whose delivery belongs to another mailing records nothing.
    crossed = tracking.make_click_token(key, delivery.id, other.mailing_id, 2)
    response = client.get(f"/c/{crossed}")
    assert response.status_code == 302 and response.headers["Location"] == "https://y"
    assert events() == []


# --- never lose an event --------------------------------------------------------------------


def _fail_writes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT INTO tracking_events", {}, Exception("database is down"))

    monkeypatch.setattr(tracking, "insert_hits", broken)
    monkeypatch.setattr(tracking, "insert_hit_batch", broken)


def test_open_and_click_are_spooled_when_the_database_fails_then_drained(
    app, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    spool_dir = tracking.spool_dir_for(app.instance_path)
    with monkeypatch.context() as patch:
        _fail_writes(patch)
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": BROWSER}))
        response = client.get(click_path(app, delivery, 1))
        assert response.status_code == 302 and response.headers["Location"] == LINKS[1]
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": GMAIL_PROXY}))
    assert events() == []
    assert tracking.pending_spooled(spool_dir) == 3

    assert drain_tracking_spool.delay().get() == 3
    rows = events()
    assert sorted((e.kind, e.link_position, e.machine) for e in rows) == [
        ("click", 1, False),
        ("open", None, False),
        ("open", None, True),
    ]
    assert tracking.pending_spooled(spool_dir) == 0
    assert drain_tracking_spool.delay().get() == 0
    assert len(events()) == 3


def test_draining_is_idempotent(app) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    spool_dir = tracking.spool_dir_for(app.instance_path)
    hit = tracking.Hit("open", delivery.id, utcnow(), None, False)
    tracking.spool(spool_dir, hit)
    tracking.spool(spool_dir, hit)  # the same event twice (a drain that died before unlinking)
    tracking.spool(spool_dir, tracking.Hit("open", delivery.id + 999, utcnow()))  # gone since
    with (spool_dir / "events.jsonl").open("a") as fh:
        fh.write("not json\n")
    assert tracking.drain_spool(db.session, spool_dir) == 1
    tracking.spool(spool_dir, hit)
    assert tracking.drain_spool(db.session, spool_dir) == 0
    assert len(events()) == 1


def test_click_redirects_from_the_cache_while_the_database_is_down(
    app, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()
    assert client.get(click_path(app, delivery, 0)).status_code == 302  # caches the link

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT", {}, Exception("database is down"))

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "link_url", down)
        _fail_writes(patch)
        response = client.get(click_path(app, delivery, 0))
        assert response.status_code == 302 and response.headers["Location"] == LINKS[0]
        # Not cached: no guessing where to go; a kind "try again", and the click is kept.
        response = client.get(click_path(app, delivery, 1))
        assert response.status_code == 503
        assert "try it again" in response.get_data(as_text=True)
    tracking.drain_spool(db.session, tracking.spool_dir_for(app.instance_path))
    assert sorted(e.link_position for e in events()) == [0, 0, 1]


def test_no_connection_at_all_spools_opens_and_clicks(
    app, direct_only, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The database refuses connections: the reader sees nothing wrong, nothing is lost."""
    delivery = make_delivery()
    assert client.get(click_path(app, delivery, 0)).status_code == 302  # caches the link

    @contextlib.contextmanager
    def refused(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("connect", {}, Exception("connection refused"))
        yield

    with monkeypatch.context() as patch:
        patch.setattr(tracking, "quick_db", refused)
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": BROWSER}))
        response = client.get(click_path(app, delivery, 0))
        assert response.status_code == 302 and response.headers["Location"] == LINKS[0]
        assert client.get(click_path(app, delivery, 1)).status_code == 503
    spool_dir = tracking.spool_dir_for(app.instance_path)
    assert tracking.pending_spooled(spool_dir) == 3
    assert tracking.drain_spool(db.session, spool_dir) == 3
    assert sorted((e.kind, e.link_position) for e in events()) == [
        ("click", 0),
        ("click", 0),
        ("click", 1),
        ("open", None),
    ]


def test_an_unexpected_error_still_answers_with_the_pixel(app, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    delivery = make_delivery()

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    monkeypatch.setattr(tracking, "record_quickly", boom)
    monkeypatch.setattr(tracking.SpoolWriter, "append", boom)
    assert_pixel(client.get(open_url(app, delivery.id)))


def test_a_web_process_drains_its_own_spool_once_the_database_answers(
    direct_only, app, client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from app.mailings import tracking_views

    delivery = make_delivery()
    spool_dir = tracking.spool_dir_for(app.instance_path)
    with monkeypatch.context() as patch:
        _fail_writes(patch)
        assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": BROWSER}))
    assert tracking.pending_spooled(spool_dir) == 1

    started = []
    monkeypatch.setitem(app.config, "TRACKING_SPOOL_INLINE_DRAIN", True)
    monkeypatch.setattr(tracking_views, "_last_drain_check", 0.0)
    monkeypatch.setattr(
        tracking_views.threading,
        "Thread",
        lambda target, args, daemon: started.append((target, args)) or _NoThread(),
    )
    assert_pixel(client.get(open_url(app, delivery.id), headers={"User-Agent": BROWSER}))
    assert len(started) == 1
    target, args = started[0]
    target(*args)  # what the background thread runs
    assert tracking.pending_spooled(spool_dir) == 0
    assert len(events()) == 2
    # Checked at most every INLINE_DRAIN_EVERY seconds per process.
    assert_pixel(client.get(open_url(app, delivery.id)))
    assert len(started) == 1


class _NoThread:
    def start(self) -> None:
        pass


def test_on_postgresql_a_hit_is_one_autocommit_statement_with_a_timeout(app, direct_only) -> None:  # type: ignore[no-untyped-def]
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the quick connection is PostgreSQL's")
    delivery = make_delivery()
    with tracking.quick_db(db.session) as conn:
        assert isinstance(conn, tracking.QuickConnection)
        assert conn.raw.autocommit
        timeout = conn.execute(text("SHOW statement_timeout"), {}).fetchone()[0]
        assert timeout == f"{tracking.QUICK_INSERT_TIMEOUT_MS}ms"
        assert tracking.insert_hits(conn, [tracking.Hit("open", delivery.id, utcnow())], False) == 1
    assert len(events()) == 1  # already committed: another connection sees it


def test_on_postgresql_a_dropped_connection_spools_once_then_reconnects(app, direct_only) -> None:  # type: ignore[no-untyped-def]
    """No pre-ping on the quick pool: a dead connection costs one spooled hit, no more."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the quick connection is PostgreSQL's")
    delivery = make_delivery()
    spool_dir = tracking.spool_dir_for(app.instance_path)
    with tracking.quick_db(db.session) as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()"), {}).fetchone()[0]
    db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    db.session.commit()
    assert not tracking.record_quickly(
        db.session, tracking.Hit("open", delivery.id, utcnow()), spool_dir
    )
    assert tracking.record_quickly(
        db.session, tracking.Hit("open", delivery.id, utcnow()), spool_dir
    )
    assert tracking.pending_spooled(spool_dir) == 1
    assert tracking.drain_spool(db.session, spool_dir) == 1
    assert len(events()) == 2
