"""Open and click tracking: signed tokens, machine-open flags, recording, and the spool.

Privacy rule 4: an open or a click is recorded per delivery, with a yes/no "machine"
flag and a time, and nothing else. The reader's IP address and user agent are looked
at (to set the flag) and never stored. Tokens carry only row ids and a link position,
signed with SECRET_KEY under their own salt: they name no person and cannot be forged.

Recording must never cost the reader an error or lose an event. The request tries one
quick insert; when the database fails or is too slow the event is appended to a spool
file in the instance folder (one JSON line per event, fsync'd) and the beat task
`tracking.drain_spool` inserts it later. Inserting is idempotent: an event already
stored (same delivery, kind, position and time to the microsecond) is not stored again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    String,
    and_,
    case,
    exists,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.orm import Session, aliased

from app.mailings.models import Delivery, MailingLink, TrackingEvent

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


def _serializer(secret_key: str, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=salt)


def make_open_token(secret_key: str, delivery_id: int) -> str:
    """The token in one delivery's open pixel, /o/<token>.gif."""
    return str(_serializer(secret_key, _OPEN_SALT).dumps(int(delivery_id)))


def make_click_token(secret_key: str, delivery_id: int, mailing_id: int, position: int) -> str:
    """The token for link `position` of a mailing in one delivery, /c/<token>."""
    payload = [int(delivery_id), int(mailing_id), int(position)]
    return str(_serializer(secret_key, _CLICK_SALT).dumps(payload))


def _loads(secret_key: str, salt: str, token: str) -> object:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return _serializer(secret_key, salt).loads(token)
    except (BadSignature, ValueError, UnicodeError):
        return None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_open_token(secret_key: str, token: str) -> int | None:
    """The delivery id an open token was made for, or None if it is not one of ours."""
    value = _loads(secret_key, _OPEN_SALT, token)
    return value if _is_id(value) else None  # type: ignore[return-value]


@dataclass(frozen=True)
class ClickTarget:
    delivery_id: int
    mailing_id: int
    position: int


def read_click_token(secret_key: str, token: str) -> ClickTarget | None:
    value = _loads(secret_key, _CLICK_SALT, token)
    if not (isinstance(value, list) and len(value) == 3 and all(_is_id(v) for v in value)):
        return None
    return ClickTarget(*value)


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


def _insert_statement(hit: Hit, dedupe: bool = True):  # type: ignore[no-untyped-def]
    """INSERT … SELECT: one row if the delivery (and, for a click, the link) exists and the
    same event is not stored yet; the machine flag is worked out against the delivery."""
    if hit.kind == "open":
        sent = Delivery.sent_at
        cutoff = hit.at - MACHINE_OPEN_WINDOW
        machine = case(
            (literal(hit.proxy, Boolean), literal(True, Boolean)),
            (and_(sent.is_not(None), sent > cutoff), literal(True, Boolean)),
            (and_(sent.is_(None), Delivery.claimed_at > cutoff), literal(True, Boolean)),
            else_=literal(False, Boolean),
        )
    else:
        machine = literal(hit.proxy, Boolean)
    existing = aliased(TrackingEvent)
    position_matches = (
        existing.link_position.is_(None)
        if hit.position is None
        else existing.link_position == hit.position
    )
    duplicate = exists().where(
        existing.delivery_id == Delivery.id,
        existing.kind == hit.kind,
        position_matches,
        existing.created_at == hit.at,
    )
    source = select(
        Delivery.id,
        literal(hit.kind, String),
        literal(hit.position, Integer),
        machine,
        literal(hit.at, DateTime),
    ).where(Delivery.id == hit.delivery_id)
    if dedupe:
        source = source.where(~duplicate)
    if hit.kind == "click" and hit.position is not None:
        source = source.where(
            exists().where(
                MailingLink.mailing_id == Delivery.mailing_id,
                MailingLink.position == hit.position,
            )
        )
    return insert(TrackingEvent).from_select(
        ["delivery_id", "kind", "link_position", "machine", "created_at"], source
    )


def insert_hits(session: Session, hits: Iterable[Hit], dedupe: bool = True) -> int:
    """Store hits not stored yet; returns how many rows were added. Never commits.

    `dedupe=False` is for callers that are idempotent already (the provider-event inbox).
    """
    added = 0
    for hit in hits:
        if hit.kind not in ("open", "click"):
            continue
        result = session.execute(
            _insert_statement(hit, dedupe), execution_options={"preserve_rowcount": True}
        )
        added += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
    return added


def record_quickly(session: Session, hit: Hit, spool_dir: Path) -> bool:
    """Store one hit now, or spool it when the database fails; True if stored now."""
    try:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET LOCAL statement_timeout = {QUICK_INSERT_TIMEOUT_MS}"))
        insert_hits(session, [hit])
        session.commit()
        return True
    except Exception:
        log.warning("tracking: database unavailable, spooling a %s event", hit.kind, exc_info=True)
        try:
            session.rollback()
        except Exception:
            log.warning("tracking: rollback failed", exc_info=True)
        spool(spool_dir, hit)
        return False


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
    """Insert every spooled event (idempotently) and remove the batches that went in.

    Commits per batch file. A file that grew while it was read (an append that opened it
    just before the rename) is kept and read again next time: repeats are not stored twice.
    """
    if not spool_dir.is_dir():
        return 0
    added = 0
    with _drain_lock:
        for path in _claim_spool(spool_dir):
            hits, size = _read_batch(path)
            added += insert_hits(session, hits)
            session.commit()
            if path.stat().st_size == size:
                path.unlink()
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


# --- links ---------------------------------------------------------------------------------

# A sent mailing's links do not change: recent answers are kept so a click still
# redirects while the database is briefly unavailable.
_LINK_CACHE_TTL = 300.0
_LINK_CACHE_MAX = 10_000
_link_cache: dict[tuple[int, int], tuple[float, str]] = {}


def cached_link_url(mailing_id: int, position: int) -> str | None:
    entry = _link_cache.get((mailing_id, position))
    if entry is None or entry[0] < time.monotonic() - _LINK_CACHE_TTL:
        return None
    return entry[1]


def link_url(session: Session, mailing_id: int, position: int) -> str | None:
    """The URL the mailing holds at `position`, or None if it holds no such link."""
    url = session.scalar(
        select(MailingLink.url).where(
            MailingLink.mailing_id == mailing_id, MailingLink.position == position
        )
    )
    if url is not None:
        if len(_link_cache) >= _LINK_CACHE_MAX:
            _link_cache.clear()
        _link_cache[(mailing_id, position)] = (time.monotonic(), url)
    return url


def clear_link_cache() -> None:
    _link_cache.clear()
