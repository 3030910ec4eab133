"""POST /webhooks/sendgrid: SendGrid's signed event webhook.

With SENDGRID_WEBHOOK_PUBLIC_KEY set, only requests whose ECDSA signature verifies are
accepted. Without a key, events are accepted only in development and testing; anywhere
else they are refused (403), so nobody can forge bounces or unsubscribes.
Accepted events are stored in the inbox (duplicates ignored) and processed by a task.
"""

from __future__ import annotations

import json
import logging
from functools import cache

from flask import Blueprint, Response, current_app, request

from app.extensions import csrf, db
from app.integrations.sendgrid_events import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookKeyError,
    make_verifier,
    signature_is_valid,
)
from app.mailings import event_tasks, events
from app.timeutil import utcnow

log = logging.getLogger(__name__)

bp = Blueprint("webhooks_sendgrid", __name__)

UNSIGNED_ALLOWED_ENVS = frozenset({"development", "testing"})


@cache
def _verifier(public_key: str):  # type: ignore[no-untyped-def]
    return make_verifier(public_key)


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain")


def _authorised(payload: str) -> bool:
    public_key = current_app.config.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or ""
    if public_key:
        try:
            verifier = _verifier(public_key)
        except WebhookKeyError:
            log.error("SendGrid webhook: SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid key")
            return False
        ok = signature_is_valid(
            verifier,
            payload,
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(TIMESTAMP_HEADER, ""),
        )
        if not ok:
            log.warning("SendGrid webhook: refused a request whose signature does not verify")
        return ok
    env = current_app.config.get("ENV_NAME", "development")
    if env in UNSIGNED_ALLOWED_ENVS:
        log.warning(
            "SendGrid webhook: accepting UNSIGNED events because SENDGRID_WEBHOOK_PUBLIC_KEY "
            "is not set (GROUNDSWELL_ENV=%s)",
            env,
        )
        return True
    log.error(
        "SendGrid webhook: refused unsigned events: set SENDGRID_WEBHOOK_PUBLIC_KEY "
        "(GROUNDSWELL_ENV=%s)",
        env,
    )
    return False


@bp.post("/webhooks/sendgrid")
@csrf.exempt
def sendgrid_events() -> Response:
    payload = request.get_data(as_text=True)
    if not _authorised(payload):
        return _plain(403, "forbidden")
    try:
        data = json.loads(payload)
    except ValueError:
        return _plain(400, "expected a JSON array of events")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return _plain(400, "expected a JSON array of events")
    added = events.store_sendgrid_events(db.session, data, utcnow())
    db.session.commit()
    if added:
        event_tasks.enqueue_processing()
    return _plain(200, "ok")
