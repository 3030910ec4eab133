"""Signed, non-expiring tokens for a supporter's own links (preferences, one-click).

A token carries only the supporter's random public id, signed with SECRET_KEY:
it reveals nothing about the person, cannot be forged, and keeps working for
as long as the secret key is kept (links in years-old emails must still work).
"""

from __future__ import annotations

import functools
import json

from itsdangerous import BadSignature, Signer, URLSafeSerializer
from itsdangerous.encoding import base64_encode

_SALT = "groundswell.supporter-links.v1"


@functools.lru_cache(maxsize=8)
def _serializer(secret_key: str) -> URLSafeSerializer:
    # One per key: a send makes a token for each of a million recipients.
    return URLSafeSerializer(secret_key, salt=_SALT)


@functools.lru_cache(maxsize=8)
def _signer(secret_key: str) -> Signer:
    return _serializer(secret_key).make_signer(_SALT)


def make_token(secret_key: str, public_id: str) -> str:
    """The same token as `URLSafeSerializer.dumps(public_id)`, made without its zlib attempt
    (a 34-byte payload never compresses) and with one signer: a send makes a million."""
    if len(public_id) > 64:
        return str(_serializer(secret_key).dumps(public_id))
    payload = base64_encode(json.dumps(public_id, separators=(",", ":"), ensure_ascii=False))
    return _signer(secret_key).sign(payload).decode()


def read_token(secret_key: str, token: str) -> str | None:
    """The public id a token was made for, or None if it is not one of ours."""
    if not token or len(token) > 200:
        return None
    try:
        value = _serializer(secret_key).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def preferences_url(base_url: str, token: str) -> str:
    return f"{base_url}/u/{token}"


def one_click_url(base_url: str, token: str) -> str:
    return f"{base_url}/u/{token}/one-click"
