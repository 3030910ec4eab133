"""The `outbox` provider: each message becomes an .eml file in instance/outbox/."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from app.integrations.email.bulk import SendsEachRecipient
from app.integrations.email.mime import MIME_POLICY, build_mime
from privacy.seal import SealedEmail


@dataclass(frozen=True)
class OutboxEntry:
    name: str
    to: str
    subject: str
    date: str


class OutboxProvider(SendsEachRecipient):
    name = "outbox"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        mime = build_mime(message)
        message_id = uuid.uuid4().hex
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{stamp}-{message_id}.eml"
        # Write then rename, so the staff listing never sees half a file.
        partial = final.with_suffix(".tmp")
        partial.write_bytes(mime.as_bytes(policy=MIME_POLICY))
        partial.rename(final)
        return message_id

    def entries(self) -> list[OutboxEntry]:
        """Messages in the outbox, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.eml"), reverse=True):
            msg = self.read(path.name)
            found.append(
                OutboxEntry(path.name, str(msg["To"]), str(msg["Subject"]), str(msg["Date"]))
            )
        return found

    def read(self, name: str) -> EmailMessage:
        """One message by file name; names outside the outbox are refused."""
        if "/" in name or "\\" in name or "\x00" in name or not name.endswith(".eml"):
            raise FileNotFoundError(name)
        path = self.directory / name
        with path.open("rb") as fh:
            parsed = BytesParser(policy=policy.default).parse(fh)
        assert isinstance(parsed, EmailMessage)
        return parsed
