"""The `sendgrid` provider: SendGrid's v3 Mail Send API through the official library."""

from __future__ import annotations

import base64
import http.client
import time
from typing import Any

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Category,
    ClickTracking,
    Content,
    CustomArg,
    Header,
    Mail,
    OpenTracking,
    ReplyTo,
    TrackingSettings,
)

from app.integrations.email import EmailProviderError
from app.integrations.email.bulk import check_bulk_call
from privacy.seal import SealedBulk, SealedEmail, SealedRecipient, require_sealed


def _retry_after(headers: object) -> float | None:
    """Seconds until SendGrid's rate limit resets, from X-RateLimit-Reset, when it says.

    SendGrid sends a Unix timestamp; a small number is read as seconds from now.
    """
    getter = getattr(headers, "get", None)
    raw = getter("X-RateLimit-Reset") if getter else None
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if value > 1_000_000_000:
        value -= time.time()
    return max(0.0, value)


def _request(sealed: SealedEmail | SealedBulk, to: str | None = None) -> Mail:
    """The parts of a Mail Send request every message shares: sender, subject, bodies."""
    mail = Mail(from_email=sealed.sender, to_emails=to, subject=sealed.subject)
    mail.add_content(Content("text/plain", sealed.text))
    if sealed.html is not None:
        mail.add_content(Content("text/html", sealed.html))
    if sealed.reply_to:
        mail.reply_to = ReplyTo(sealed.reply_to)
    mail.add_category(Category(sealed.category))
    # We track opens and clicks on our own host (privacy rule 4), not SendGrid's.
    mail.tracking_settings = TrackingSettings(
        click_tracking=ClickTracking(False, False), open_tracking=OpenTracking(False)
    )
    return mail


class SendGridProvider:
    name = "sendgrid"

    def __init__(
        self, api_key: str, host: str = "https://api.sendgrid.com", timeout: float = 30.0
    ) -> None:
        if not api_key:
            raise EmailProviderError("SENDGRID_API_KEY is not set", retryable=False)
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        # The library waits forever by default; a hung connection would stall a worker.
        self.client.client.timeout = timeout

    def build(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> Mail:
        sealed = require_sealed(message)
        mail = _request(sealed, to=sealed.to)
        for name, value in sealed.headers.items():
            mail.add_header(Header(name, value))
        for key, value in (custom_args or {}).items():
            mail.add_custom_arg(CustomArg(key, value))
        for filename, mimetype, data in sealed.attachments:
            mail.add_attachment(
                Attachment(base64.b64encode(data).decode(), filename, mimetype, "attachment")
            )
        return mail

    def build_bulk(
        self,
        bulk: SealedBulk,
        recipients: list[SealedRecipient],
        custom_args_per_recipient: list[dict[str, str]],
    ) -> dict[str, Any]:
        """One request body: the shared parts once (built with the library's Mail), then
        one personalization per recipient as the plain JSON the v3 API documents —
        a thousand helper objects per chunk cost more than sealing the chunk."""
        sealed_bulk, checked = check_bulk_call(bulk, recipients, custom_args_per_recipient)
        body: dict[str, Any] = _request(sealed_bulk).get()
        body["personalizations"] = [
            {
                "to": [{"email": recipient.to}],
                "substitutions": dict(recipient.substitutions),
                "headers": dict(recipient.headers),
                "custom_args": dict(args),
            }
            for recipient, args in zip(checked, custom_args_per_recipient, strict=True)
        ]
        return body

    def send_bulk(
        self,
        bulk: SealedBulk,
        recipients: list[SealedRecipient],
        custom_args_per_recipient: list[dict[str, str]],
    ) -> str:
        return self._post(self.build_bulk(bulk, recipients, custom_args_per_recipient))

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        return self._post(self.build(message, custom_args))

    def _post(self, mail: Mail | dict[str, Any]) -> str:
        try:
            response = self.client.send(mail)
        except http_errors.HTTPError as exc:
            status = getattr(exc, "status_code", 0)
            retryable = status == 429 or status >= 500
            retry_after = _retry_after(getattr(exc, "headers", None)) if retryable else None
            raise EmailProviderError(
                f"SendGrid answered {status}", retryable=retryable, retry_after=retry_after
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            # Refused, timed out, or an answer that is not HTTP: all worth another try.
            raise EmailProviderError(f"SendGrid could not be reached: {exc!r}") from exc
        headers = response.headers
        return str(headers.get("X-Message-Id", "") if headers else "")
