"""/o/<token>.gif and /c/<token>: record an open or a click, answer at once, never an error.

Only the delivery, the kind, the link position, the time and a machine flag are kept
(privacy rule 4): the IP address and user agent are read to set the flag, never stored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
)

from app.extensions import db
from app.mailings import tracking
from app.timeutil import utcnow

log = logging.getLogger(__name__)

bp = Blueprint("tracking", __name__)

# A 1x1 transparent GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0, private"


def _spool_dir() -> Path:
    return tracking.spool_dir_for(current_app.instance_path)


def _batched() -> bool:
    """TRACKING_WRITE_MODE: "batched" (the default) buffers hits in this process's spool
    file and stores them in batches; "direct" stores each before answering."""
    return current_app.config.get("TRACKING_WRITE_MODE", "batched") != "direct"


def _writer() -> tracking.SpoolWriter:
    """This process's spool writer, made on the first hit: after gunicorn forks, never before
    (its threads would not survive the fork)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    writer: tracking.SpoolWriter | None = app.extensions.get("tracking.writer")
    if writer is None or writer.closed or writer.pid != os.getpid():
        threads = app.config.get("TRACKING_BACKGROUND_THREADS", not app.testing)
        writer = tracking.spool_writer(_spool_dir(), db.engine, threads=threads)
        app.extensions["tracking.writer"] = writer
    return writer


def _buffer(hit: tracking.Hit) -> None:
    writer = _writer()
    writer.append(hit)
    # Tests (and only they, by default) store each hit before the response, so a test can
    # look for it at once; they have no background threads.
    if current_app.config.get("TRACKING_FLUSH_EACH_REQUEST", current_app.testing):
        try:
            writer.sync()
            writer.drain()
        except Exception:  # the hit is in the file: stored by a later drain
            log.warning("tracking: buffered hits not stored yet", exc_info=True)


def _record(hit: tracking.Hit) -> None:
    if _batched():
        try:
            _buffer(hit)
            return
        except Exception:  # the spool file cannot be written: store it directly
            log.warning("tracking: %s event not buffered", hit.kind, exc_info=True)
    if tracking.record_quickly(db.session, hit, _spool_dir, db.engine):
        _maybe_drain_in_background()


# Each web process drains its own spool once the database answers again, so events
# spooled on any host go in (the beat task `tracking.drain_spool` covers its own host).
INLINE_DRAIN_EVERY = 30.0  # seconds between checks, per process
_last_drain_check = 0.0
_drain_check_lock = threading.Lock()


def _maybe_drain_in_background() -> None:
    global _last_drain_check
    now = time.monotonic()
    if now - _last_drain_check < INLINE_DRAIN_EVERY:  # the usual case, without the lock
        return
    if not current_app.config.get("TRACKING_SPOOL_INLINE_DRAIN", True):
        return
    with _drain_check_lock:
        if now - _last_drain_check < INLINE_DRAIN_EVERY:
            return
        _last_drain_check = now
    spool_dir = _spool_dir()
    if not (spool_dir.is_dir() and any(spool_dir.glob("*.jsonl"))):
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    threading.Thread(target=_drain, args=(app, spool_dir), daemon=True).start()


def _drain(app: Flask, spool_dir: Path) -> None:
    with app.app_context():
        try:
            added = tracking.drain_spool(db.session, spool_dir)
            if added:
                log.info("tracking: %s spooled events stored", added)
        except Exception:
            log.warning("tracking: spool not drained yet", exc_info=True)
            db.session.rollback()
        finally:
            db.session.remove()


def pixel_response() -> Response:
    response = Response(PIXEL, status=200, mimetype="image/gif")
    response.headers["Cache-Control"] = NO_CACHE
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    return response


@bp.get("/o/<token>.gif")
def open_pixel(token: str) -> Response:
    """Always the pixel: a bad token, a slow database or a bug must not show as a broken image."""
    try:
        delivery_id = tracking.read_open_token(current_app.config["SECRET_KEY"], token)
        if delivery_id is not None:
            proxy = tracking.is_proxy_user_agent(request.headers.get("User-Agent"))
            _record(tracking.Hit("open", delivery_id, utcnow(), None, proxy))
    except Exception:  # the last resort: the event is lost, the reader still sees nothing wrong
        log.exception("tracking: open not recorded")
    return pixel_response()


@bp.get("/c/<token>")
def click(token: str) -> Response:
    """Record the click and redirect to the mailing's own link at that position; else 404.

    A link to one of our action pages gets the reader's signed token and the mailing id
    added (see tracking.follow_click); any other link is redirected to exactly as stored.
    """
    target = tracking.read_click_token(current_app.config["SECRET_KEY"], token)
    if target is None:
        abort(404)
    try:
        answer = tracking.follow_click(
            db.session,
            target,
            _click_hit(target),
            _spool_dir,
            current_app.config["BASE_URL"],
            current_app.config["SECRET_KEY"],
            db.engine,
            buffer=_buffer if _batched() else None,
        )
    except tracking.LinkUnavailable:
        # Never guess a destination (no open redirect); the click is spooled: ask for a retry.
        response = Response(
            render_template(
                "errors/error.html",
                code=503,
                title="One moment, please",
                message="We could not open that link just now. Please try it again in a minute.",
            ),
            status=503,
        )
        response.headers["Retry-After"] = "30"
        return response
    if answer.url is None:
        abort(404)
    if answer.stored:
        _maybe_drain_in_background()
    response = redirect(answer.url, code=302)
    response.headers["Location"] = answer.url  # exactly the link (Werkzeug would not re-quote it)
    response.headers["Cache-Control"] = NO_CACHE
    return response


def _click_hit(target: tracking.ClickTarget) -> tracking.Hit:
    proxy = tracking.is_proxy_user_agent(request.headers.get("User-Agent"))
    return tracking.Hit("click", target.delivery_id, utcnow(), target.position, proxy)
