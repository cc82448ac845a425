"""Turning rendered content into an RFC 5322 message plus its SMTP envelope.

Owns the MIME structure (text and HTML alternatives, attachments mixed around them),
the headers we always set (Message-ID, Date, one-click List-Unsubscribe per RFC 8058),
the hidden preheader, the plain-text fallback generated from HTML, and the rule that
bcc recipients exist only in the envelope. Inputs are already-rendered strings; any
address or header that turned invalid during rendering raises ``MessageBuildError``.
"""

from __future__ import annotations

import html as html_lib
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from html.parser import HTMLParser

from dispatcher.sending.addresses import normalize_address, parse_mailbox
from dispatcher.sending.errors import MessageBuildError

__all__ = ["OutgoingMail", "build_message", "html_to_text"]


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A message ready for a transport.

    ``recipients`` is the SMTP envelope (to, then bcc, deduplicated); ``message_key``
    travels alongside for logs and results but is never written into the message.
    """

    message: EmailMessage
    envelope_from: str
    recipients: tuple[str, ...]
    message_id: str
    message_key: str

    def as_bytes(self) -> bytes:
        # CRLF line endings, as SMTP and .eml readers expect.
        return self.message.as_bytes(policy=SMTP)


_PREHEADER_STYLE = (
    "display:none!important;visibility:hidden;mso-hide:all;font-size:1px;line-height:1px;"
    "color:transparent;max-height:0;max-width:0;opacity:0;overflow:hidden"
)
_BODY_START_RE = re.compile(r"<body\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.IGNORECASE)


def _insert_preheader(html: str, preheader: str) -> str:
    span = f'<span style="{_PREHEADER_STYLE}">{html_lib.escape(preheader)}</span>'
    # Inbox previews show the first text of the body, so the span must come first.
    match = _BODY_START_RE.search(html)
    if match is None:
        return span + html
    return html[: match.end()] + span + html[match.end() :]


class _TextExtractor(HTMLParser):
    _BLOCK = frozenset(
        "address article aside blockquote div dl dt dd footer form h1 h2 h3 h4 h5 h6 header hr "
        "li main nav ol p pre section table tr ul".split()
    )
    _HIDDEN = frozenset(("head", "script", "style", "title"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._href: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")
            self._link_text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n\n")
        elif tag == "a" and self._href:
            # Keep the destination visible: a text-only reader cannot click the words.
            text = "".join(self._link_text).strip()
            if self._href.startswith(("http://", "https://")) and self._href != text:
                self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.parts.append(data)
        if self._href is not None:
            self._link_text.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html`` for the text/plain alternative."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _mailbox(value: str, field: str) -> Address:
    try:
        name, address = parse_mailbox(value)
    except ValueError as exc:
        raise MessageBuildError(f"{field}: {value!r} is not a valid address ({exc})") from None
    username, _, domain = address.rpartition("@")
    return Address(display_name=name, username=username, domain=domain)


def _envelope_address(value: str, field: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise MessageBuildError(f"{field}: {value!r} is not a valid address ({exc})") from None


def _content_type(filename: str) -> tuple[str, str]:
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    # A compressed-encoding guess (x.tar.gz -> tar + gzip) describes the wrong bytes.
    if guessed is None or encoding is not None:
        return "application", "octet-stream"
    maintype, _, subtype = guessed.partition("/")
    return maintype, subtype


def build_message(
    *,
    from_: str,
    to: str,
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    subject: str,
    html: str | None,
    text: str | None,
    preheader: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Mapping[str, bytes] | None = None,
    message_key: str,
    unsubscribe_url: str,
    envelope_from: str | None = None,
    date: datetime | None = None,
) -> OutgoingMail:
    """Build the message for one send.

    At least one of ``html`` and ``text`` is required; when only HTML is given a text
    alternative is generated from it. ``envelope_from`` (the bounce address) defaults
    to the From address.
    """
    if html is None and text is None:
        raise MessageBuildError("a message needs an html or a text body")
    sender = _mailbox(from_, "from")
    recipient = _envelope_address(to, "to")

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    if reply_to:
        msg["Reply-To"] = _mailbox(reply_to, "replyTo")
    # Rendered attributes may carry line breaks; in a subject they are only layout.
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    message_id = make_msgid(domain=sender.domain)
    msg["Message-ID"] = message_id
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        if name in msg:
            raise MessageBuildError(f"header {name!r} is set by dispatcher and cannot be overridden")
        if "\r" in value or "\n" in value:
            raise MessageBuildError(f"header {name!r} must not contain line breaks")
        msg[name] = value

    if html is not None and preheader:
        html = _insert_preheader(html, preheader)
    if text is None and html is not None:
        text = html_to_text(html)
    msg.set_content(text or "")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, data in (attachments or {}).items():
        maintype, subtype = _content_type(filename)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)

    recipients = [recipient]
    for address in bcc:
        normalized = _envelope_address(address, "bcc")
        if normalized.lower() not in (r.lower() for r in recipients):
            recipients.append(normalized)
    return OutgoingMail(
        message=msg,
        envelope_from=_envelope_address(envelope_from, "envelope_from") if envelope_from else sender.addr_spec,
        recipients=tuple(recipients),
        message_id=message_id,
        message_key=message_key,
    )
