"""The published policy text and its version, recorded with every consent."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# Bump whenever policy.md changes in substance: consent records keep the version shown.
POLICY_VERSION = "2026-11-24"

_POLICY_FILE = Path(__file__).with_name("policy.md")


@cache
def policy_text() -> str:
    """The policy in Markdown, as published at /privacy."""
    return _POLICY_FILE.read_text(encoding="utf-8")
