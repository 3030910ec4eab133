"""Helpers shared by providers that send a bulk body one message at a time."""

from __future__ import annotations

from app.integrations.email import MAX_BULK_RECIPIENTS, EmailProviderError
from privacy.seal import (
    SealedBulk,
    SealedEmail,
    SealedRecipient,
    render_recipient,
    require_sealed_bulk,
)


def check_bulk_call(
    bulk: SealedBulk,
    recipients: list[SealedRecipient],
    custom_args_per_recipient: list[dict[str, str]],
) -> tuple[SealedBulk, list[SealedRecipient]]:
    sealed_bulk, checked = require_sealed_bulk(bulk, recipients)
    if not checked:
        raise ValueError("send_bulk needs at least one recipient")
    if len(checked) > MAX_BULK_RECIPIENTS:
        raise ValueError(f"send_bulk takes at most {MAX_BULK_RECIPIENTS} recipients")
    if len(custom_args_per_recipient) != len(checked):
        raise ValueError("one custom_args dict per recipient")
    return sealed_bulk, checked


class SendsEachRecipient:
    """`send_bulk` for providers that send one finished message per person (outbox, SMTP)."""

    def send(self, message: SealedEmail, custom_args: dict[str, str] | None = None) -> str:
        raise NotImplementedError

    def send_bulk(
        self,
        bulk: SealedBulk,
        recipients: list[SealedRecipient],
        custom_args_per_recipient: list[dict[str, str]],
    ) -> str:
        """Render and send each recipient's message; the first message id stands for the batch.

        If the server fails part-way, the error says how many were accepted before it, so
        the pipeline marks those sent and re-queues only the rest.
        """
        sealed_bulk, checked = check_bulk_call(bulk, recipients, custom_args_per_recipient)
        ids: list[str] = []
        for recipient, args in zip(checked, custom_args_per_recipient, strict=True):
            try:
                ids.append(self.send(render_recipient(sealed_bulk, recipient), args))
            except EmailProviderError as exc:
                exc.accepted, exc.one_recipient = len(ids), True
                raise
        return ids[0]
