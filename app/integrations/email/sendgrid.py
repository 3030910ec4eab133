"""The `sendgrid` provider: SendGrid's v3 Mail Send API through the official library."""

from __future__ import annotations

import base64
import http.client

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
from privacy.seal import SealedEmail, require_sealed


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
        mail = Mail(from_email=sealed.sender, to_emails=sealed.to, subject=sealed.subject)
        mail.add_content(Content("text/plain", sealed.text))
        if sealed.html is not None:
            mail.add_content(Content("text/html", sealed.html))
        if sealed.reply_to:
            mail.reply_to = ReplyTo(sealed.reply_to)
        for name, value in sealed.headers.items():
            mail.add_header(Header(name, value))
        for key, value in (custom_args or {}).items():
            mail.add_custom_arg(CustomArg(key, value))
        mail.add_category(Category(sealed.category))
        # We track opens and clicks on our own host (privacy rule 4), not SendGrid's.
        mail.tracking_settings = TrackingSettings(
            click_tracking=ClickTracking(False, False), open_tracking=OpenTracking(False)
        )
        for filename, mimetype, data in sealed.attachments:
            mail.add_attachment(
                Attachment(base64.b64encode(data).decode(), filename, mimetype, "attachment")
            )
        return mail

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        mail = self.build(message, custom_args)
        try:
            response = self.client.send(mail)
        except http_errors.HTTPError as exc:
            status = getattr(exc, "status_code", 0)
            retryable = status == 429 or status >= 500
            raise EmailProviderError(f"SendGrid answered {status}", retryable=retryable) from exc
        except (OSError, http.client.HTTPException) as exc:
            # Refused, timed out, or an answer that is not HTTP: all worth another try.
            raise EmailProviderError(f"SendGrid could not be reached: {exc!r}") from exc
        headers = response.headers
        return str(headers.get("X-Message-Id", "") if headers else "")
