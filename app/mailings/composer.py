"""Render a mailing's body (Markdown or sanitised HTML) once into a responsive HTML part
and a plain-text part.

The result carries SendGrid-style placeholders that are filled per recipient: by
SendGrid substitutions on the bulk path, by `privacy.seal.render_recipient()` for
the outbox and SMTP providers. -first_name- and -unsubscribe_url- as before; every
http(s) link in the body becomes -click_N- (N its position among the mailing's
links, which become MailingLink rows), and -open_url- is the open pixel.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from markdown_it import MarkdownIt

from app.html import sanitise_html
from privacy.seal import UNSUBSCRIBE_PLACEHOLDER, BulkDraft

FIRST_NAME_PLACEHOLDER = "-first_name-"
OPEN_PLACEHOLDER = "-open_url-"
DEFAULT_FIRST_NAME = "friend"
BODY_FORMATS = ("markdown", "html")


def click_placeholder(position: int) -> str:
    return f"-click_{position}-"


_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
# {{ first_name }} or {{ first_name | default("friend") }}: the default is applied per
# recipient when the substitutions are built (see pipeline.recipient_substitutions).
_MERGE_FIELD = re.compile(r"\{\{\s*first_name\s*(\|\s*default\(\s*[\"'][^\"']*[\"']\s*\))?\s*\}\}")


@dataclass(frozen=True)
class ComposedBody:
    text: str
    html: str
    links: tuple[str, ...] = ()  # the tracked links, position 1 first


def _merge_fields(body: str) -> str:
    return _MERGE_FIELD.sub(FIRST_NAME_PLACEHOLDER, body)


def _text_from_markdown(body_md: str) -> str:
    """A readable plain-text part: Markdown is already plain text; links keep their URL."""
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"\1 (\2)", body_md)
    return text.strip()


class _TextFromHtml(HTMLParser):
    """Plain text from sanitised HTML: paragraphs on their own lines, links as "label (url)"."""

    _BLOCKS = {"p", "h2", "h3", "h4", "li", "tr", "blockquote", "pre", "hr", "br", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n\n" if tag not in ("br", "li", "tr") else "\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href.append(dict(attrs).get("href") or "")
        if tag == "img":
            self.parts.append(dict(attrs).get("alt") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href:
            href = self._href.pop()
            if href:
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        self.parts.append(re.sub(r"\s+", " ", data))


def _text_from_html(body_html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(body_html)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.split("\n"))).strip()


_HREF = re.compile(r'(<a\s[^>]*?href=")([^"]*)(")', re.IGNORECASE)
_TRACKABLE = re.compile(r"https?://", re.IGNORECASE)


def _track_links(body_html: str, body_text: str) -> tuple[str, str, tuple[str, ...]]:
    """Replace each http(s) link with its -click_N- placeholder, in both parts.

    The same URL twice shares one position. mailto: and tel: links are left as
    they are. The text part's "(url)" forms are replaced by the same placeholders.
    """
    links: list[str] = []

    def position_of(url: str) -> int:
        if url not in links:
            links.append(url)
        return links.index(url) + 1

    def wrap(match: re.Match[str]) -> str:
        url = html.unescape(match.group(2))
        if not _TRACKABLE.match(url):
            return match.group(0)
        return f"{match.group(1)}{click_placeholder(position_of(url))}{match.group(3)}"

    tracked_html = _HREF.sub(wrap, body_html)
    tracked_text = body_text
    # Longest first, so that a URL which is a prefix of another is not replaced inside it.
    for url in sorted(links, key=len, reverse=True):
        tracked_text = tracked_text.replace(
            f"({url})", f"({click_placeholder(links.index(url) + 1)})"
        )
    return tracked_html, tracked_text, tuple(links)


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
{pixel}
</div>
</body>
</html>
"""

TEXT_TEMPLATE = """{body}

--
{org_name}, {postal_address}
Unsubscribe or change your email preferences: {unsubscribe}
"""


PIXEL_TAG = (
    f'<img src="{OPEN_PLACEHOLDER}" width="1" height="1" alt="" style="display:block;border:0">'
)


def compose(
    subject: str,
    body: str,
    org_name: str,
    postal_address: str,
    preheader: str = "",
    *,
    body_format: str = "markdown",
    track: bool = False,
) -> ComposedBody:
    """The HTML and text parts for a body, with the unsubscribe footer.

    With `track`, links become click placeholders and the open pixel is added.
    """
    if body_format not in BODY_FORMATS:
        raise ValueError(f"unknown body format {body_format!r}")
    body = _merge_fields(body)
    if body_format == "markdown":
        body_html = sanitise_html(_markdown.render(body))
        body_text = _text_from_markdown(body)
    else:
        body_html = sanitise_html(body)
        body_text = _text_from_html(body_html)
    links: tuple[str, ...] = ()
    if track:
        body_html, body_text, links = _track_links(body_html, body_text)
    esc = html.escape
    rendered_html = HTML_TEMPLATE.format(
        subject=esc(_merge_fields(subject)),
        preheader=esc(preheader),
        body=body_html,
        org_name=esc(org_name),
        postal_address=esc(postal_address),
        unsubscribe=UNSUBSCRIBE_PLACEHOLDER,
        pixel=PIXEL_TAG if track else "",
    )
    text = TEXT_TEMPLATE.format(
        body=body_text,
        org_name=org_name,
        postal_address=postal_address,
        unsubscribe=UNSUBSCRIBE_PLACEHOLDER,
    )
    return ComposedBody(text=text, html=rendered_html, links=links)


@dataclass(frozen=True)
class ComposedMailing:
    draft: BulkDraft
    links: tuple[str, ...]


def bulk_draft(
    subject: str,
    body: str,
    *,
    sender: str,
    org_name: str,
    postal_address: str,
    reply_to: str | None = None,
    preheader: str = "",
    category: str = "mailing",
    body_format: str = "markdown",
    track: bool = False,
) -> ComposedMailing:
    composed = compose(
        subject, body, org_name, postal_address, preheader, body_format=body_format, track=track
    )
    draft = BulkDraft(
        subject=_merge_fields(subject),
        text=composed.text,
        html=composed.html,
        sender=sender,
        reply_to=reply_to,
        category=category,
    )
    return ComposedMailing(draft, composed.links)
