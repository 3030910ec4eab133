"""The `smtp` provider, for organisations that run their own mail server."""

from __future__ import annotations

import smtplib

from app.integrations.email import EmailProviderError
from app.integrations.email.bulk import SendsEachRecipient
from app.integrations.email.mime import build_mime
from privacy.seal import SealedEmail


class SmtpProvider(SendsEachRecipient):
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        mime = build_mime(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as client:
                if self.starttls:
                    client.starttls()
                if self.username:
                    client.login(self.username, self.password)
                client.send_message(mime)
        except smtplib.SMTPRecipientsRefused as exc:
            raise EmailProviderError(
                f"SMTP server refused the recipient: {exc}", retryable=False
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise EmailProviderError(f"SMTP delivery failed: {exc}") from exc
        return str(mime["Message-ID"]).strip("<>")
