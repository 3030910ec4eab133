"""Supporter link tokens: the fast path makes exactly the tokens itsdangerous makes, so
links in emails already sent keep working."""

from __future__ import annotations

import secrets
import uuid

from itsdangerous import URLSafeSerializer

from app.supporters.tokens import _SALT, make_token, read_token


def test_fast_tokens_are_the_serializers_tokens() -> None:
    for _ in range(500):
        key, public_id = secrets.token_urlsafe(32), uuid.uuid4().hex
        token = make_token(key, public_id)
        assert token == URLSafeSerializer(key, salt=_SALT).dumps(public_id)
        assert read_token(key, token) == public_id
        assert read_token(secrets.token_urlsafe(32), token) is None


def test_long_ids_take_the_serializer_path() -> None:
    key, public_id = "k" * 32, "x" * 200  # compressible: the serializer would zlib it
    assert make_token(key, public_id) == URLSafeSerializer(key, salt=_SALT).dumps(public_id)
