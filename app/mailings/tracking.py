"""Open and click tracking: signed tokens, machine-open flags, recording, and the spool.

Privacy rule 4: an open or a click is recorded per delivery, with a yes/no "machine"
flag and a time, and nothing else. The reader's IP address and user agent are looked
at (to set the flag) and never stored. Tokens carry only row ids and a link position,
signed with SECRET_KEY under their own salt: they name no person and cannot be forged.

Recording must never cost the reader an error or lose an event. By default
(TRACKING_WRITE_MODE "batched", see "batched writes" below) the request only appends the
hit to its process's spool file and the process stores hits in batches about every
second. In "direct" mode the request tries one quick insert (on PostgreSQL through a
small pool of its own: autocommit, statement_timeout set once per connection, so a hit
is one round trip); when the database fails or is too slow the event is appended to a
spool file in the instance folder (one JSON line per event, fsync'd) and the beat task
`tracking.drain_spool` inserts it later. Inserting is idempotent: an event already
stored (same delivery, kind, position and time to the microsecond) is not stored again.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Flask
from sqlalchemy import (
    URL,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Insert,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    create_engine,
    exists,
    false,
    insert,
    null,
    select,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable, Select

from app.mailings.models import Delivery, Mailing, MailingLink, MailingStatus, TrackingEvent
from app.supporters.models import Supporter
from app.supporters.tokens import make_token as make_supporter_token

log = logging.getLogger(__name__)

_OPEN_SALT = "groundswell.tracking.open.v1"
_CLICK_SALT = "groundswell.tracking.click.v1"
MAX_TOKEN_LENGTH = 200

# An open this soon after the message was handed over is a machine fetching images on
# delivery (a security scanner, a mail proxy prefetching), not a person reading.
MACHINE_OPEN_WINDOW = timedelta(seconds=10)

# User agents of mail proxies and scanners that fetch images (or follow links) for the
# reader. Substrings, matched case-insensitively. Apple Mail Privacy Protection fetches
# through a proxy that sends the bare "Mozilla/5.0" (matched exactly, below).
MAIL_PROXY_USER_AGENTS: tuple[str, ...] = (
    "googleimageproxy",  # Gmail image proxy ("... via ggpht.com GoogleImageProxy")
    "ggpht.com",
    "yahoomailproxy",  # Yahoo and AOL
    "yahoo! slurp",
    "outlook-ios-proxy",
    "mimecast",  # link and image scanners at mail gateways
    "barracuda",
    "proofpoint",
)
APPLE_PRIVACY_PROXY_USER_AGENTS: frozenset[str] = frozenset({"mozilla/5.0"})

# How long the quick insert in a request may take on PostgreSQL before the event is spooled.
QUICK_INSERT_TIMEOUT_MS = 500
SPOOL_DIRNAME = "tracking-spool"
SPOOL_FILENAME = "events.jsonl"


# --- tokens -----------------------------------------------------------------------------


# Compact tokens: the ids packed in binary and an HMAC-SHA256 tag cut to 128 bits, both
# base64url. A send signs one per recipient and one per link (a million recipients with
# five links is six million tokens), so they must be cheap: about 2 µs here, against
# about 40 µs for an itsdangerous serializer (JSON, a zlib attempt, key derivation).
_OPEN_FORMAT = struct.Struct(">Q")  # delivery id
_CLICK_FORMAT = struct.Struct(">QQH")  # delivery id, mailing id, link position
_TAG_BYTES = 16


@functools.lru_cache(maxsize=16)
def _key(secret_key: str, salt: str) -> bytes:
    """A key of its own per token kind, so one kind's token is never valid as another's."""
    return hmac.new(secret_key.encode(), salt.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret_key: str, salt: str, payload: bytes) -> str:
    tag = hmac.new(_key(secret_key, salt), payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{_b64(payload)}.{_b64(tag)}"


def _verified(secret_key: str, salt: str, token: str, *sizes: int) -> bytes | None:
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        return None
    body, tag = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(tag)
    except (ValueError, UnicodeError):
        return None
    if len(payload) not in sizes or _b64(payload) != body:  # one spelling per token
        return None
    expected = hmac.new(_key(secret_key, salt), payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return payload if hmac.compare_digest(expected, given) else None


def make_open_token(secret_key: str, delivery_id: int) -> str:
    """The token in one delivery's open pixel, /o/<token>.gif."""
    return _sign(secret_key, _OPEN_SALT, _OPEN_FORMAT.pack(int(delivery_id)))


_READER_BYTES = 16  # a supporter's public id: 32 hex digits


def make_click_token(
    secret_key: str, delivery_id: int, mailing_id: int, position: int, reader: str = ""
) -> str:
    """The token for link `position` of a mailing in one delivery, /c/<token>.

    For a link to one of our action pages the send adds the reader's public id (the
    random id their own signed links already carry), so the redirect can add their `t=`
    token without asking the database who they are.
    """
    payload = _CLICK_FORMAT.pack(int(delivery_id), int(mailing_id), int(position))
    if reader:
        payload += bytes.fromhex(reader)
    return _sign(secret_key, _CLICK_SALT, payload)


def read_open_token(secret_key: str, token: str) -> int | None:
    """The delivery id an open token was made for, or None if it is not one of ours."""
    payload = _verified(secret_key, _OPEN_SALT, token, _OPEN_FORMAT.size)
    return None if payload is None else int(_OPEN_FORMAT.unpack(payload)[0])


@dataclass(frozen=True)
class ClickTarget:
    delivery_id: int
    mailing_id: int
    position: int
    reader: str = ""  # the reader's public id, in tokens for links to our action pages


def read_click_token(secret_key: str, token: str) -> ClickTarget | None:
    size = _CLICK_FORMAT.size
    payload = _verified(secret_key, _CLICK_SALT, token, size, size + _READER_BYTES)
    if payload is None:
        return None
    return ClickTarget(*_CLICK_FORMAT.unpack(payload[:size]), reader=payload[size:].hex())


def open_pixel_url(base_url: str, token: str) -> str:
    return f"{base_url}/o/{token}.gif"


def click_url(base_url: str, token: str) -> str:
    return f"{base_url}/c/{token}"


# --- machine opens ------------------------------------------------------------------------


def is_proxy_user_agent(user_agent: str | None) -> bool:
    """True for a known mail proxy or scanner (the user agent itself is never stored)."""
    ua = (user_agent or "").strip().lower()
    if not ua:
        return False
    if ua in APPLE_PRIVACY_PROXY_USER_AGENTS:
        return True
    return any(pattern in ua for pattern in MAIL_PROXY_USER_AGENTS)


# --- recording ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One open or click, as seen at the edge: all that is ever kept of it."""

    kind: str  # open | click
    delivery_id: int
    at: datetime
    position: int | None = None
    proxy: bool = False  # a known mail-proxy user agent

    def to_json(self) -> str:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Hit | None:
        try:
            data = json.loads(line)
            position = data.get("position")
            return cls(
                kind=str(data["kind"]),
                delivery_id=int(data["delivery_id"]),
                at=datetime.fromisoformat(data["at"]),
                position=None if position is None else int(position),
                proxy=bool(data.get("proxy", False)),
            )
        except (ValueError, KeyError, TypeError):
            return None


_events = TrackingEvent.__table__
_deliveries = Delivery.__table__
_links = MailingLink.__table__


@functools.cache
def _insert_statement(kind: str, has_position: bool, dedupe: bool) -> Insert:
    """INSERT … SELECT: one row if the delivery (and, for a click, the link) exists and the
    same event is not stored yet; the machine flag is worked out against the delivery.

    Built once per shape with bound parameters, so SQLAlchemy's compiled cache serves
    every later hit (building it per request cost more than the database round trip).
    """
    d = _deliveries.c
    proxy = bindparam("proxy", type_=Boolean())
    position = bindparam("position", type_=Integer()) if has_position else null()
    if kind == "open":
        cutoff = bindparam("cutoff", type_=DateTime())
        machine = case(
            (proxy, true()),
            (and_(d.sent_at.is_not(None), d.sent_at > cutoff), true()),
            (and_(d.sent_at.is_(None), d.claimed_at > cutoff), true()),
            else_=false(),
        )
    else:
        machine = proxy
    source = select(
        d.id,
        bindparam("kind", type_=String()),
        cast(position, Integer()),
        cast(machine, Boolean()),
        bindparam("at", type_=DateTime()),
    ).where(d.id == bindparam("delivery_id", type_=Integer()))
    if dedupe:
        existing = _events.alias("existing")
        source = source.where(
            ~exists().where(
                existing.c.delivery_id == d.id,
                existing.c.kind == bindparam("kind"),
                existing.c.link_position == position
                if has_position
                else existing.c.link_position.is_(None),
                existing.c.created_at == bindparam("at"),
            )
        )
    if kind == "click" and has_position:
        source = source.where(
            exists().where(_links.c.mailing_id == d.mailing_id, _links.c.position == position)
        )
    return insert(_events).from_select(
        ["delivery_id", "kind", "link_position", "machine", "created_at"], source
    )


def _params(hit: Hit) -> dict[str, object]:
    params: dict[str, object] = {
        "delivery_id": hit.delivery_id,
        "kind": hit.kind,
        "proxy": hit.proxy,
        "at": hit.at,
    }
    if hit.position is not None:
        params["position"] = hit.position
    if hit.kind == "open":
        params["cutoff"] = hit.at - MACHINE_OPEN_WINDOW
    return params


def insert_hits(session: Executor, hits: Iterable[Hit], dedupe: bool = True) -> int:
    """Store hits not stored yet; returns how many rows were added. Never commits.

    `dedupe=False` is for callers that are idempotent already (the provider-event inbox,
    and a hit stored the moment it happened: nothing can hold its microsecond yet).
    """
    added = 0
    for hit in hits:
        if hit.kind not in ("open", "click"):
            continue
        statement = _insert_statement(hit.kind, hit.position is not None, dedupe)
        added += max(_run(session, statement, _params(hit)).rowcount or 0, 0)
    return added


# A tracking request on PostgreSQL talks to the database through its own small pool of
# autocommit connections: statement_timeout is set once per connection (not per request),
# there is no pre-ping and no BEGIN/COMMIT, so storing a hit is a single round trip. Its
# few statements are compiled once and run on the psycopg connection directly: for these
# one-row statements SQLAlchemy's execution layer cost more than the round trip.
QUICK_CONNECT_TIMEOUT_S = 2
_quick_engines: dict[tuple[int, str], Engine] = {}
_quick_engines_lock = threading.Lock()


class QuickConnection:
    """A pooled psycopg connection (autocommit) that runs cached SQLAlchemy statements."""

    def __init__(self, dbapi_connection: Any, dialect: Dialect) -> None:
        self.raw = dbapi_connection
        self.dialect = dialect

    def execute(self, statement: Executable, params: dict[str, object]) -> Any:
        return self.raw.execute(_compiled_sql(statement, self.dialect), params)


@functools.cache
def _compiled_sql(statement: Executable, dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect))


Executor = Session | Connection | QuickConnection


def _run(conn: Executor, statement: Executable, params: dict[str, object]) -> Any:
    """A cursor or result (rowcount, fetchone) for one of this module's statements."""
    if isinstance(conn, QuickConnection):
        return conn.execute(statement, params)
    return conn.execute(statement, params, execution_options={"preserve_rowcount": True})


def _quick_engine(url: URL) -> Engine:
    key = (os.getpid(), url.render_as_string(hide_password=False))
    engine = _quick_engines.get(key)
    if engine is None:
        with _quick_engines_lock:
            engine = _quick_engines.get(key)
            if engine is None:
                engine = create_engine(
                    url,
                    isolation_level="AUTOCOMMIT",
                    connect_args={
                        "connect_timeout": QUICK_CONNECT_TIMEOUT_S,
                        "options": f"-c statement_timeout={QUICK_INSERT_TIMEOUT_MS}",
                    },
                )
                _quick_engines[key] = engine
    return engine


def dispose_quick_engines() -> None:
    with _quick_engines_lock:
        for engine in _quick_engines.values():
            engine.dispose()
        _quick_engines.clear()


@contextlib.contextmanager
def quick_db(session: Session, bind: Engine | None = None) -> Iterator[Executor]:
    """What a tracking request queries: on PostgreSQL a quick autocommit connection, on
    other databases (SQLite in development and tests) the request's own session.

    A caller that knows the engine passes it as `bind`, so that on PostgreSQL no session
    is even created for the request."""
    bind = bind or session.get_bind().engine
    if bind.dialect.name != "postgresql":
        yield session
        return
    engine = _quick_engine(bind.url)
    pooled = engine.raw_connection()
    try:
        yield QuickConnection(pooled.driver_connection, engine.dialect)
    finally:
        raw = pooled.driver_connection
        if raw is None or raw.broken or raw.closed:  # without pre-ping, never pool a dead one
            pooled.invalidate()
        pooled.close()  # back to the pool


def _store_now(conn: Executor, hit: Hit) -> bool:
    """Insert one new hit and make it durable; False (logged) if the database failed."""
    try:
        insert_hits(conn, [hit], dedupe=False)
        if _is_session(conn):
            conn.commit()
        return True
    except Exception:
        log.warning("tracking: database unavailable, spooling a %s event", hit.kind, exc_info=True)
        if _is_session(conn):
            _rollback(conn)
        return False


def _is_session(conn: Executor) -> bool:
    return not isinstance(conn, (Connection, QuickConnection))  # a Session or its scoped proxy


def _rollback(session: Session) -> None:
    try:
        session.rollback()
    except Exception:
        log.warning("tracking: rollback failed", exc_info=True)


def record_quickly(
    session: Session, hit: Hit, spool_dir: Path | Callable[[], Path], bind: Engine | None = None
) -> bool:
    """Store one hit now, or spool it when the database fails; True if stored now.

    `spool_dir` may be a function, called only when the hit has to be spooled."""
    stored = False
    try:
        with quick_db(session, bind) as conn:
            stored = _store_now(conn, hit)
    except Exception:  # no connection at all
        log.warning("tracking: database unavailable, spooling a %s event", hit.kind, exc_info=True)
        _rollback(session)
    if not stored:
        spool(spool_dir if isinstance(spool_dir, Path) else spool_dir(), hit)
    return stored


# --- the spool -------------------------------------------------------------------------------


def spool_dir_for(instance_path: str | Path) -> Path:
    return Path(instance_path) / SPOOL_DIRNAME


def spool(spool_dir: Path, hit: Hit) -> None:
    """Append one event to the spool, durably (several processes may append at once)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    line = (hit.to_json() + "\n").encode()
    fd = os.open(spool_dir / SPOOL_FILENAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


_drain_lock = threading.Lock()


def _claim_spool(spool_dir: Path) -> list[Path]:
    """Move the live spool aside (atomic rename) and list every batch waiting to be drained."""
    live = spool_dir / SPOOL_FILENAME
    if live.exists():
        name = f"draining-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        with contextlib.suppress(FileNotFoundError):  # another drainer took it
            live.rename(spool_dir / name)
    return sorted(spool_dir.glob("draining-*.jsonl"))


def _read_batch(path: Path) -> tuple[list[Hit], int]:
    with path.open("rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # wait for an append in progress
        data = fh.read()
    hits = []
    for raw in data.decode(errors="replace").splitlines():
        if raw.strip() and (hit := Hit.from_json(raw)) is not None:
            hits.append(hit)
    return hits, len(data)


def drain_spool(session: Session, spool_dir: Path) -> int:
    """Insert every spooled event (idempotently) and remove the batches that went in: the
    spool of direct mode, this process's batched hits, and the files of batched-mode
    processes that are gone (or whose file has not grown for ORPHAN_AFTER).

    Commits per batch file. A file that grew while it was read (an append that opened it
    just before the rename) is kept and read again next time: repeats are not stored twice.
    """
    if not spool_dir.is_dir():
        return 0
    added = flush_writers(spool_dir)
    with _drain_lock:
        for path in _claim_spool(spool_dir):
            hits, size = _read_batch(path)
            added += insert_hit_batch(session, hits)
            session.commit()
            if path.stat().st_size == size:
                path.unlink()
        for path in sorted(spool_dir.glob("events-*.jsonl")):
            if match := _PROCESS_FILE.match(path.name):
                added += _drain_process_file(session, path, match)
    return added


def pending_spooled(spool_dir: Path) -> int:
    """How many events wait in the spool (for health checks and tests)."""
    if not spool_dir.is_dir():
        return 0
    count = 0
    for path in spool_dir.glob("*.jsonl"):
        with path.open("rb") as fh:
            count += sum(1 for line in fh if line.strip())
    return count


# --- batched writes ---------------------------------------------------------------------------
#
# TRACKING_WRITE_MODE "batched" (the default): a request stores nothing in the database.
# It appends the hit as one line to its own process's spool file (one os.write of a whole
# line under O_APPEND: no lock, no fsync). Two threads per process, started with the
# first hit (after any fork): one fsyncs the file every FSYNC_EVERY seconds when something
# was written, so a killed process loses nothing (the page cache keeps it) and a machine
# crash at most that much; one inserts the new lines into the database every DRAIN_EVERY
# seconds in one set-based statement per batch, and truncates the file once it is fully
# drained. Only the owner truncates its file; the beat task drains the files of processes
# that are gone. Draining a file is serialised by flock and idempotent (dedupe), so a line
# inserted twice is stored once.

WRITE_MODES = ("batched", "direct")
FSYNC_EVERY = 0.2
DRAIN_EVERY = 1.0
ORPHAN_AFTER = 60.0  # a file that has not grown for this long is drained by the beat task
_READ_LIMIT = 8 * 1024 * 1024  # bytes read per drain step: bounded memory
_BATCH_ROWS = 5000
_PROCESS_FILE = re.compile(r"^events-(?P<host>.+)-(?P<pid>\d+)-(?P<start>\d+)\.jsonl$")

# One statement for a whole batch on PostgreSQL: the hits arrive as five arrays (five
# parameters, whatever the batch size), repeats within the batch are dropped by DISTINCT
# ON, events already stored by NOT EXISTS, and the machine flag is worked out against the
# delivery exactly as _insert_statement does for one hit.
_PG_BATCH_INSERT = text(
    """
    INSERT INTO tracking_events (delivery_id, kind, link_position, machine, created_at)
    SELECT d.id, h.kind, h.position,
           CASE WHEN h.kind <> 'open' THEN h.proxy
                WHEN h.proxy THEN true
                WHEN d.sent_at IS NOT NULL AND d.sent_at > h.at - CAST(:window AS interval)
                    THEN true
                WHEN d.sent_at IS NULL AND d.claimed_at > h.at - CAST(:window AS interval)
                    THEN true
                ELSE false END,
           h.at
    FROM (
        SELECT DISTINCT ON (delivery_id, kind, position, at) *
        FROM unnest(CAST(:ids AS bigint[]), CAST(:kinds AS text[]), CAST(:positions AS int[]),
                    CAST(:proxies AS boolean[]), CAST(:ats AS timestamp[]))
             AS u(delivery_id, kind, position, proxy, at)
        WHERE kind IN ('open', 'click')
    ) AS h
    JOIN deliveries AS d ON d.id = h.delivery_id
    WHERE (h.kind = 'open' OR (h.position IS NOT NULL AND EXISTS (
              SELECT 1 FROM mailing_links AS l
              WHERE l.mailing_id = d.mailing_id AND l.position = h.position)))
      AND NOT EXISTS (
              SELECT 1 FROM tracking_events AS e
              WHERE e.delivery_id = d.id AND e.kind = h.kind
                AND e.link_position IS NOT DISTINCT FROM h.position
                AND e.created_at = h.at)
    """
)


def _dialect_name(conn: Session | Connection) -> str:
    bind = conn if isinstance(conn, Connection) else conn.get_bind()  # a (scoped) Session
    return str(bind.dialect.name)


def insert_hit_batch(conn: Session | Connection, hits: list[Hit]) -> int:
    """Store a batch of hits idempotently (each at most once); rows added. Never commits.

    On PostgreSQL one statement per _BATCH_ROWS hits; elsewhere (SQLite in development and
    tests) hit by hit through insert_hits."""
    if _dialect_name(conn) != "postgresql":
        return insert_hits(conn, hits, dedupe=True)
    window = f"{MACHINE_OPEN_WINDOW.total_seconds()} seconds"
    added = 0
    for start in range(0, len(hits), _BATCH_ROWS):
        chunk = hits[start : start + _BATCH_ROWS]
        params = {
            "window": window,
            "ids": [h.delivery_id for h in chunk],
            "kinds": [h.kind for h in chunk],
            "positions": [h.position for h in chunk],
            "proxies": [h.proxy for h in chunk],
            "ats": [h.at for h in chunk],
        }
        result = conn.execute(_PG_BATCH_INSERT, params)
        added += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
    return added


def _parse_lines(data: bytes) -> list[Hit]:
    hits = []
    for raw in data.decode(errors="replace").splitlines():
        if raw.strip() and (hit := Hit.from_json(raw)) is not None:
            hits.append(hit)
    return hits


def _complete(data: bytes) -> bytes:
    """Whole lines only: a line being written (or torn by a crash) waits or is dropped."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def _process_file_name(start_ns: int) -> str:
    host = socket.gethostname().replace("/", "_") or "host"
    return f"events-{host}-{os.getpid()}-{start_ns}.jsonl"


class SpoolWriter:
    """This process's spool file: appends from requests, fsync and drain threads."""

    def __init__(self, spool_dir: Path, engine: Engine, threads: bool) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.path = spool_dir / _process_file_name(time.time_ns())
        self.engine = engine
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._read_fd = os.open(self.path, os.O_RDONLY)
        self._write_lock = threading.Lock()  # appends against the owner's truncate
        self._drain_lock = threading.Lock()
        self._offset = 0  # bytes of the file already stored in the database
        self._dirty = False
        self._stop = threading.Event()
        self.closed = False
        self._threads: list[threading.Thread] = []
        if threads:
            self.start()

    def append(self, hit: Hit) -> None:
        line = (hit.to_json() + "\n").encode()
        with self._write_lock:
            os.write(self._fd, line)
            self._dirty = True

    def sync(self) -> None:
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def pending_bytes(self) -> int:
        return os.fstat(self._fd).st_size - self._offset

    def drain(self) -> int:
        """Insert the lines not stored yet; rows added. Raises if the database fails (the
        lines stay and are tried again)."""
        added = 0
        with self._drain_lock:
            fcntl.flock(self._read_fd, fcntl.LOCK_EX)  # the beat task may be reading it
            try:
                while True:
                    size = os.fstat(self._read_fd).st_size
                    if size <= self._offset:
                        break
                    data = _complete(os.pread(self._read_fd, _READ_LIMIT, self._offset))
                    if not data:
                        break
                    with self.engine.begin() as conn:
                        added += insert_hit_batch(conn, _parse_lines(data))
                    self._offset += len(data)
                self._truncate_if_drained()
            finally:
                fcntl.flock(self._read_fd, fcntl.LOCK_UN)
        return added

    def _truncate_if_drained(self) -> None:
        with self._write_lock:
            if self._offset and os.fstat(self._fd).st_size == self._offset:
                os.ftruncate(self._fd, 0)  # O_APPEND: the next line goes at 0
                self._offset = 0

    def start(self) -> None:
        for name, every, step in (
            ("fsync", FSYNC_EVERY, self.sync),
            ("drain", DRAIN_EVERY, self.drain),
        ):
            thread = threading.Thread(
                target=self._loop, args=(every, step), name=f"tracking-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _loop(self, every: float, step: Callable[[], object]) -> None:
        while not self._stop.wait(every):
            try:
                step()
            except Exception:  # the database is down: the lines wait in the file
                log.warning("tracking: %s failed, will retry", step.__name__, exc_info=True)

    def close(self, drain: bool = True) -> None:
        """Stop the threads, make the file durable and (if it can) store what is left."""
        self._stop.set()
        self.closed = True
        for thread in self._threads:
            thread.join(timeout=DRAIN_EVERY + 1)
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        if drain:
            try:
                self.drain()
            except Exception:
                log.warning("tracking: final drain failed; the beat task will", exc_info=True)
        empty = os.fstat(self._fd).st_size == 0
        os.close(self._fd)
        os.close(self._read_fd)
        if empty:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


_writers: dict[tuple[int, str, str], SpoolWriter] = {}
_writers_lock = threading.Lock()


def spool_writer(spool_dir: Path, engine: Engine, threads: bool = True) -> SpoolWriter:
    """This process's writer for `spool_dir`, made (and its threads started) on first use:
    a forked child gets its own, never its parent's."""
    key = (os.getpid(), str(spool_dir), engine.url.render_as_string(hide_password=False))
    writer = _writers.get(key)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(key)
            if writer is None:
                if not _writers or all(k[0] != os.getpid() for k in _writers):
                    atexit.register(close_writers)
                writer = _writers[key] = SpoolWriter(spool_dir, engine, threads)
    return writer


def close_writers(drain: bool = True) -> None:
    """Close this process's writers (at exit; tests). Their files stay if not drained."""
    with _writers_lock:
        mine = [k for k in _writers if k[0] == os.getpid()]
        for key in mine:
            _writers.pop(key).close(drain)


def buffer_hit(spool_dir: Path, engine: Engine, hit: Hit, threads: bool = True) -> None:
    spool_writer(spool_dir, engine, threads).append(hit)


def flush_writers(spool_dir: Path | None = None) -> int:
    """Make this process's buffered hits durable and store them now; rows added."""
    added = 0
    for key, writer in list(_writers.items()):
        if key[0] == os.getpid() and (spool_dir is None or key[1] == str(spool_dir)):
            writer.sync()
            added += writer.drain()
    return added


def flush_now(app: Flask) -> int:
    """Store every hit waiting in `app`'s spool now (this process's buffered hits, direct
    mode's spool, files of processes that are gone); rows added. For tests and the bench."""
    from app.extensions import db

    with app.app_context():
        return drain_spool(db.session(), spool_dir_for(app.instance_path))


def _owner_gone(match: re.Match[str]) -> bool:
    if match["host"] != socket.gethostname().replace("/", "_"):
        return False  # another host's process: only its age says it is gone
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _drain_process_file(session: Session, path: Path, match: re.Match[str]) -> int:
    """A file another process (or a dead one) owns: drain it if that process is gone or
    the file has not grown for ORPHAN_AFTER; unlink it only if the owner is gone."""
    mine = {str(w.path) for k, w in _writers.items() if k[0] == os.getpid()}
    if str(path) in mine:
        return 0  # our own writer drains it
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0
    gone = _owner_gone(match)
    if not gone and time.time() - stat.st_mtime < ORPHAN_AFTER:
        return 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its owner is draining it right now
        raw = os.pread(fd, os.fstat(fd).st_size, 0)
        data = _complete(raw)
        added = insert_hit_batch(session, _parse_lines(data))
        session.commit()
        if gone:  # nobody appends to it any more (a new process never reuses its name)
            if len(raw) != len(data):
                log.warning("tracking: dropped a line torn by a crash in %s", path.name)
            path.unlink()
        return added
    finally:
        os.close(fd)  # closing releases the lock


# --- links ---------------------------------------------------------------------------------

# A mailing's links do not change once sending starts, so each process keeps the answers
# for mailings past that point and looks a link up again only after the TTL; the cache
# also lets a click redirect while the database is briefly unavailable.
_LINK_CACHE_TTL = 300.0
_LINK_CACHE_MAX = 10_000
_link_cache: dict[tuple[int, int], tuple[float, str]] = {}
_EDITABLE_STATUSES = (MailingStatus.DRAFT, MailingStatus.SCHEDULED)


def cached_link_url(mailing_id: int, position: int) -> str | None:
    entry = _link_cache.get((mailing_id, position))
    if entry is None or entry[0] < time.monotonic() - _LINK_CACHE_TTL:
        return None
    return entry[1]


@functools.cache
def _link_statement() -> Select[tuple[str, str]]:
    return (
        select(MailingLink.url, Mailing.status)
        .join(Mailing, Mailing.id == MailingLink.mailing_id)
        .where(
            MailingLink.mailing_id == bindparam("mailing_id", type_=Integer()),
            MailingLink.position == bindparam("position", type_=Integer()),
        )
    )


def link_url(session: Executor, mailing_id: int, position: int) -> str | None:
    """The URL the mailing holds at `position`, or None if it holds no such link."""
    params = {"mailing_id": mailing_id, "position": position}
    row = _run(session, _link_statement(), params).fetchone()
    if row is None:
        return None
    url, status = row
    if status not in _EDITABLE_STATUSES:  # a draft's links may still be edited
        if len(_link_cache) >= _LINK_CACHE_MAX:
            _link_cache.clear()
        _link_cache[(mailing_id, position)] = (time.monotonic(), url)
    return str(url)


def clear_link_cache() -> None:
    _link_cache.clear()


# --- clicks ----------------------------------------------------------------------------------


class LinkUnavailable(Exception):
    """The database could not say where a click goes and the link was not cached."""


def is_action_page(url: str, base_url: str) -> bool:
    """True for one of our own action pages: BASE_URL's origin and a path /a/<slug>…"""
    link, base = urlsplit(url), urlsplit(base_url)
    if (link.scheme.lower(), link.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
        return False
    prefix = base.path.rstrip("/") + "/a/"
    return link.path.startswith(prefix) and len(link.path) > len(prefix)


def with_reader(url: str, token: str, mailing_id: int) -> str:
    """The action-page URL with the reader's signed token and the mailing id in its query
    (replacing any already there; other parameters and the fragment are kept)."""
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("t", "mid")
    ]
    query += [("t", token), ("mid", str(mailing_id))]
    return urlunsplit(parts._replace(query=urlencode(query)))


@functools.cache
def _reader_statement() -> Select[tuple[str]]:
    return (
        select(Supporter.public_id)
        .join(Delivery, Delivery.supporter_id == Supporter.id)
        .where(
            Delivery.id == bindparam("delivery_id", type_=Integer()),
            Delivery.mailing_id == bindparam("mailing_id", type_=Integer()),
        )
    )


def reader_token(conn: Executor, secret_key: str, delivery_id: int, mailing_id: int) -> str | None:
    """The signed supporter token of the delivery's recipient (one query), or None."""
    params = {"delivery_id": delivery_id, "mailing_id": mailing_id}
    row = _run(conn, _reader_statement(), params).fetchone()
    return make_supporter_token(secret_key, row[0]) if row and row[0] else None


@dataclass(frozen=True)
class ClickAnswer:
    url: str | None  # None: the mailing holds no such link (404)
    stored: bool  # stored in the database now (not spooled)


def follow_click(
    session: Session,
    target: ClickTarget,
    hit: Hit,
    spool_dir: Path | Callable[[], Path],
    base_url: str,
    secret_key: str,
    bind: Engine | None = None,
    buffer: Callable[[Hit], None] | None = None,
) -> ClickAnswer:
    """Record a click and say where the reader goes: the link the mailing holds at that
    position, or no URL when it holds none (nothing is recorded then). A link to one of our
    action pages carries the reader's token and the mailing id, so the page recognises
    them and credits the mailing; if that lookup fails they get the plain link.

    The click is stored, or spooled when the database fails; with `buffer` (batched
    mode) it is handed to that instead, and the database is asked only for a link not
    cached yet and an action page's reader. Raises LinkUnavailable when the database
    cannot be reached and the link is not cached (the click is kept all the same).
    """
    url = cached_link_url(target.mailing_id, target.position)
    stored = buffered = False
    # The send put the reader into the token for action-page links: no lookup needed.
    token = make_supporter_token(secret_key, target.reader) if target.reader else None
    try:
        if (
            buffer is not None
            and url is not None
            and (token is not None or not is_action_page(url, base_url))
        ):
            buffer(hit)  # batched mode, link cached, reader known: no database at all
            return ClickAnswer(_for_reader(url, token, target, base_url), stored=False)
        with quick_db(session, bind) as conn:
            if url is None:
                url = link_url(conn, target.mailing_id, target.position)
                if url is None:
                    return ClickAnswer(None, stored=False)
            if buffer is not None:
                buffer(hit)
                buffered = True
            else:
                stored = _store_now(conn, hit)
            if token is None and is_action_page(url, base_url):
                token = _reader_token_or_none(conn, secret_key, target)
    except Exception:
        log.warning("tracking: database unavailable for a click", exc_info=True)
        _rollback(session)
    if not (stored or buffered):
        _buffer_or_spool(hit, buffer, spool_dir)
    if url is None:
        raise LinkUnavailable
    return ClickAnswer(_for_reader(url, token, target, base_url), stored)


def _for_reader(url: str, token: str | None, target: ClickTarget, base_url: str) -> str:
    """The link with the reader's token when it is one of our action pages; else as stored."""
    if token and is_action_page(url, base_url):
        return with_reader(url, token, target.mailing_id)
    return url


def _buffer_or_spool(
    hit: Hit, buffer: Callable[[Hit], None] | None, spool_dir: Path | Callable[[], Path]
) -> None:
    if buffer is not None:
        try:
            buffer(hit)
            return
        except Exception:
            log.warning("tracking: %s event not buffered, spooling it", hit.kind, exc_info=True)
    _spool_or_log(spool_dir if isinstance(spool_dir, Path) else spool_dir(), hit)


def _spool_or_log(spool_dir: Path, hit: Hit) -> None:
    try:
        spool(spool_dir, hit)
    except Exception:  # the last resort: the reader still goes where they meant to
        log.exception("tracking: %s event not spooled", hit.kind)


def _reader_token_or_none(conn: Executor, secret_key: str, target: ClickTarget) -> str | None:
    try:
        return reader_token(conn, secret_key, target.delivery_id, target.mailing_id)
    except Exception:
        log.warning("tracking: reader not looked up, plain link given", exc_info=True)
        if _is_session(conn):
            _rollback(conn)
        return None
