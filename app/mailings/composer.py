"""Render a mailing's Markdown body once into a responsive HTML part and a text part.

The result carries SendGrid-style placeholders (-first_name-, -unsubscribe_url-)
that are filled per recipient: by SendGrid substitutions on the bulk path, by
`privacy.seal.render_recipient()` for the outbox and SMTP providers.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt

from app.html import sanitise_html
from privacy.seal import UNSUBSCRIBE_PLACEHOLDER, BulkDraft

FIRST_NAME_PLACEHOLDER = "-first_name-"
DEFAULT_FIRST_NAME = "friend"

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
# {{ first_name }} or {{ first_name | default("friend") }}: the default is applied per
# recipient when the substitutions are built (see pipeline.recipient_substitutions).
_MERGE_FIELD = re.compile(r"\{\{\s*first_name\s*(\|\s*default\(\s*[\"'][^\"']*[\"']\s*\))?\s*\}\}")


@dataclass(frozen=True)
class ComposedBody:
    text: str
    html: str


def _merge_fields(body: str) -> str:
    return _MERGE_FIELD.sub(FIRST_NAME_PLACEHOLDER, body)


def _text_from_markdown(body_md: str) -> str:
    """A readable plain-text part: Markdown is already plain text; links keep their URL."""
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"\1 (\2)", body_md)
    return text.strip()


HTML_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{subject}</title>
<style>
  body {{ margin: 0; padding: 0; background: #f4f4f4; }}
  .wrap {{ width: 100%; background: #f4f4f4; }}
  .main {{ max-width: 600px; margin: 0 auto; background: #ffffff; padding: 24px;
          font-family: Helvetica, Arial, sans-serif; font-size: 16px; line-height: 1.5;
          color: #222222; }}
  .main img {{ max-width: 100%; height: auto; }}
  .footer {{ max-width: 600px; margin: 0 auto; padding: 16px 24px; font-size: 12px;
            color: #666666; font-family: Helvetica, Arial, sans-serif; }}
  @media (max-width: 620px) {{ .main, .footer {{ padding: 16px; }} }}
</style>
</head>
<body>
<span style="display:none;max-height:0;overflow:hidden">{preheader}</span>
<div class="wrap">
<div class="main">
{body}
</div>
<div class="footer">
<p>{org_name}, {postal_address}</p>
<p>You get this email because you joined {org_name}.
<a href="{unsubscribe}">Unsubscribe or change your email preferences</a>.</p>
</div>
</div>
</body>
</html>
"""

TEXT_TEMPLATE = """{body}

--
{org_name}, {postal_address}
Unsubscribe or change your email preferences: {unsubscribe}
"""


def compose(
    subject: str, body_md: str, org_name: str, postal_address: str, preheader: str = ""
) -> ComposedBody:
    """The HTML and text parts for a Markdown body, with the unsubscribe footer."""
    body_md = _merge_fields(body_md)
    body_html = sanitise_html(_markdown.render(body_md))
    esc = html.escape
    rendered_html = HTML_TEMPLATE.format(
        subject=esc(subject),
        preheader=esc(preheader),
        body=body_html,
        org_name=esc(org_name),
        postal_address=esc(postal_address),
        unsubscribe=UNSUBSCRIBE_PLACEHOLDER,
    )
    text = TEXT_TEMPLATE.format(
        body=_text_from_markdown(body_md),
        org_name=org_name,
        postal_address=postal_address,
        unsubscribe=UNSUBSCRIBE_PLACEHOLDER,
    )
    return ComposedBody(text=text, html=rendered_html)


def bulk_draft(
    subject: str,
    body_md: str,
    *,
    sender: str,
    org_name: str,
    postal_address: str,
    reply_to: str | None = None,
    preheader: str = "",
    category: str = "mailing",
) -> BulkDraft:
    composed = compose(subject, body_md, org_name, postal_address, preheader)
    return BulkDraft(
        subject=_merge_fields(subject),
        text=composed.text,
        html=composed.html,
        sender=sender,
        reply_to=reply_to,
        category=category,
    )
