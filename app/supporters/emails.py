"""Email address checks: syntax with email-validator, plus a hint for common typos."""

from __future__ import annotations

import difflib

from email_validator import EmailNotValidError, validate_email

COMMON_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "aol.com",
    "icloud.com",
    "live.com",
    "msn.com",
    "comcast.net",
    "verizon.net",
    "att.net",
    "protonmail.com",
    "proton.me",
    "mail.com",
    "gmx.com",
    "yahoo.co.uk",
    "hotmail.co.uk",
    "btinternet.com",
)


class InvalidEmail(ValueError):
    """The address cannot be used; the message says why, in plain words."""


def normalise_email(raw: str) -> str:
    """The address in canonical form (domain lower-cased, local part lower-cased).

    Raises InvalidEmail with a message a person can act on.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidEmail("Please enter your email address.")
    try:
        # No DNS look-up: sign-up must not depend on (or leak to) outside resolvers.
        info = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"That email address doesn't look right: {exc}") from None
    # Mailbox names are case-insensitive at every provider our supporters use;
    # lower-casing the whole address is what makes "one person, one record" hold.
    return info.normalized.lower()


def typo_suggestion(address: str) -> str | None:
    """A likely intended address when the domain is one letter off a common one."""
    local, _, domain = address.rpartition("@")
    if not local or domain in COMMON_DOMAINS:
        return None
    close = difflib.get_close_matches(domain, COMMON_DOMAINS, n=1, cutoff=0.8)
    return f"{local}@{close[0]}" if close else None
