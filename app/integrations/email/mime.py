"""Turn a sealed message into an RFC 5322 message (for the outbox and SMTP)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from privacy.seal import SealedEmail, require_sealed

# RFC 5322 allows 998-character lines. The default 78 would fold the long
# List-Unsubscribe URL into RFC 2047 encoded-words, which mail clients do not
# decode in that header, breaking one-click unsubscribe.
MIME_POLICY = policy.SMTP.clone(max_line_length=998)


def build_mime(message: SealedEmail, message_id_domain: str = "groundswell.local") -> EmailMessage:
    sealed = require_sealed(message)
    mime = EmailMessage(policy=MIME_POLICY)
    mime["From"] = sealed.sender
    mime["To"] = sealed.to
    mime["Subject"] = sealed.subject
    mime["Date"] = formatdate(localtime=False)
    mime["Message-ID"] = make_msgid(domain=message_id_domain)
    if sealed.reply_to:
        mime["Reply-To"] = sealed.reply_to
    for name, value in sealed.headers.items():
        mime[name] = value
    mime.set_content(sealed.text)
    if sealed.html is not None:
        mime.add_alternative(sealed.html, subtype="html")
    for filename, mimetype, data in sealed.attachments:
        maintype, _, subtype = mimetype.partition("/")
        mime.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mime
