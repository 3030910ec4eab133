"""Email providers. Each accepts only a `privacy.seal.SealedEmail`.

`outbox` writes .eml files for a laptop, `sendgrid` speaks SendGrid's v3 API
through the official library, `smtp` hands messages to any SMTP server.
"""

from __future__ import annotations

from typing import Any, Protocol

from privacy.seal import SealedBulk, SealedEmail, SealedRecipient

# SendGrid's limit on personalizations (recipients) per mail-send request.
MAX_BULK_RECIPIENTS = 1000


class EmailProviderError(RuntimeError):
    """The provider did not accept the message; `retryable` says whether to try again.

    `retry_after` is how many seconds the provider asked us to wait (from its
    rate-limit headers), when it said.
    """

    def __init__(
        self,
        message: str,
        retryable: bool = True,
        retry_after: float | None = None,
        accepted: int = 0,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        # For a bulk send one message at a time: how many recipients, from the first,
        # were accepted before the failure (they must not be sent again), and whether
        # the failure concerns only the next recipient (a refused address), not the rest.
        self.accepted = accepted
        self.one_recipient = False


class EmailProvider(Protocol):
    name: str

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        """Send one sealed message; return the provider's message id."""
        ...

    def send_bulk(
        self,
        bulk: SealedBulk,
        recipients: list[SealedRecipient],
        custom_args_per_recipient: list[dict[str, str]],
    ) -> str:
        """Send one sealed body to up to MAX_BULK_RECIPIENTS sealed recipients, each with
        their own substitutions, headers and custom args; return the provider's message id."""
        ...


def provider_from_config(config: dict[str, Any]) -> EmailProvider:
    """The provider named by EMAIL_PROVIDER."""
    name = config["EMAIL_PROVIDER"]
    if name == "outbox":
        from app.integrations.email.outbox import OutboxProvider

        return OutboxProvider(config["OUTBOX_DIR"])
    if name == "sendgrid":
        from app.integrations.email.sendgrid import SendGridProvider

        return SendGridProvider(config["SENDGRID_API_KEY"], config["SENDGRID_API_HOST"])
    if name == "smtp":
        from app.integrations.email.smtp import SmtpProvider

        return SmtpProvider(
            host=config["SMTP_HOST"],
            port=config["SMTP_PORT"],
            username=config["SMTP_USERNAME"],
            password=config["SMTP_PASSWORD"],
            starttls=config["SMTP_STARTTLS"],
        )
    raise ValueError(f"unknown EMAIL_PROVIDER {name!r}: use outbox, sendgrid or smtp")
