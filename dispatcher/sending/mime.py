"""Turning rendered content into an RFC 5322 message plus its SMTP envelope.

Owns the MIME structure (text and HTML alternatives, attachments mixed around them),
the headers we always set (Message-ID, Date, one-click List-Unsubscribe per RFC 8058),
the hidden preheader, the plain-text fallback generated from HTML, and the rule that
bcc recipients exist only in the envelope. Inputs are already-rendered strings; any
address or header that turned invalid during rendering raises ``MessageBuildError``.

Messages are built with the stdlib's compat32 ``email.message.Message`` and encoded by
hand (RFC 2047 words for non-ASCII header text, RFC 2231 for file names, 7bit or
quoted-printable text, base64 attachments): the modern ``email.policy`` parses every
header it is given back through its header registry, several times the cost of the
whole build here.
"""

from __future__ import annotations

import base64
import html as html_lib
import mimetypes
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.policy import Compat32
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from urllib.parse import quote

from dispatcher.sending.addresses import normalize_address, parse_mailbox
from dispatcher.sending.errors import MessageBuildError

__all__ = ["OutgoingMail", "build_message", "html_to_text"]

_PLAIN_HEADER_RE = re.compile(r"[\t\x20-\x7e]*")
_FOLD_PIECE_RE = re.compile(r"[ \t]+[^ \t]*")


class _Policy(Compat32):
    """compat32, with plain ASCII header values folded by ``_fold_plain``.

    compat32 folds through ``email.header.Header``, which is most of the cost of
    writing a message and moves a first word too long for the first line onto a line
    of its own, leaving a header value that modern parsers read with a leading space.
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        # The generator passes the stored value: a str, or a Header we set.
        if isinstance(value, str) and _PLAIN_HEADER_RE.fullmatch(value):
            return _fold_plain(name, value, self.max_line_length or 78, self.linesep).encode("ascii")
        return super().fold_binary(name, value)


def _fold_plain(name: str, value: str, limit: int, linesep: str) -> str:
    """``name: value``, with line breaks before whitespace to keep lines within ``limit``.

    Unfolding (dropping the line breaks) gives back exactly ``name: value``; a word
    longer than a line stays whole, on the header's first line if it is the first.
    """
    line = f"{name}: {value}"
    if len(line) <= limit:
        return line + linesep
    lines = [f"{name}:"]
    for index, piece in enumerate(_FOLD_PIECE_RE.findall(" " + value)):
        # No empty or blank line: no break before the first word or before bare whitespace.
        if index and piece.strip() and len(lines[-1]) + len(piece) > limit:
            lines.append(piece)
        else:
            lines[-1] += piece
    return linesep.join(lines) + linesep


# CRLF line endings, as SMTP and .eml readers expect; headers folded at 78 characters.
_POLICY = _Policy(linesep="\r\n")
# A local charset: the email.charset registry is global, and its utf-8 entry says base64.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
# SMTP refuses lines over 998 octets (RFC 5321 4.5.3.1.6).
_SMTP_LINE = 998
_OVERLONG_BODY_LINE_RE = re.compile(r"[^\r\n]{999}")
_WSP_RE = re.compile(r"[ \t]+")
# Printable ASCII without space or colon (RFC 5322 ftext).
_HEADER_NAME_RE = re.compile(r"[!-9;-~]+")
# Every character str.splitlines() breaks at: some reader may take any for a new line.
_LINE_BREAK_RE = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Percent-encoded characters per RFC 2231 file name section: a section and its
# parameter name fit on one 78-character line.
_FILENAME_SECTION = 50
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A message ready for a transport.

    ``recipients`` is the SMTP envelope (to, then bcc, deduplicated); ``message_key``
    travels alongside for logs and results but is never written into the message.
    """

    message: Message[str | Header, str | Header]
    envelope_from: str
    recipients: tuple[str, ...]
    message_id: str
    message_key: str

    def as_bytes(self) -> bytes:
        return self.message.as_bytes(policy=_POLICY)


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


def _mailbox(value: str, field: str) -> tuple[str, str]:
    try:
        return parse_mailbox(value)
    except ValueError as exc:
        raise MessageBuildError(f"{field}: {value!r} is not a valid address ({exc})") from None


def _envelope_address(value: str, field: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise MessageBuildError(f"{field}: {value!r} is not a valid address ({exc})") from None


def _foldable(name: str, value: str) -> bool:
    """Whether ``value`` can go as plain text: ASCII, no word too long for a line."""
    return value.isascii() and len(name) + 2 + max(map(len, _WSP_RE.split(value))) <= _SMTP_LINE


def _header_text(name: str, value: str) -> str | Header:
    """``value`` as plain text, or else as RFC 2047 encoded words (which can be split)."""
    return value if _foldable(name, value) else Header(value, "utf-8", header_name=name)


def _mailbox_header(name: str, display_name: str, address: str) -> str | Header:
    """``Display Name <address>``, quoting an ASCII name or encoding any other."""
    if not display_name:
        return address
    if display_name.isascii():
        formatted = formataddr((display_name, address))
        if _foldable(name, formatted):
            return formatted
    header = Header(display_name, "utf-8", header_name=name)
    header.append(f"<{address}>", "us-ascii")
    return header


def _text_part(body: str, subtype: str) -> Message:
    part = Message(policy=_POLICY)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    if body.isascii() and _OVERLONG_BODY_LINE_RE.search(body) is None:
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(body)
    else:
        # Quoted-printable rather than base64: text stays readable and greppable.
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(_UTF8_QP.body_encode(body))
    return part


def _multipart(subtype: str, *parts: Message) -> Message:
    container = Message(policy=_POLICY)
    # Set here, or the generator picks one and compiles a regex for it to search the
    # parts. "=_" cannot occur in base64 or quoted-printable, and 128 random bits are
    # not going to occur in a 7bit text part.
    boundary = f"=_{secrets.token_hex(16)}"
    container["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"'
    for part in parts:
        container.attach(part)
    return container


def _content_type(filename: str) -> tuple[str, str]:
    guessed, encoding = mimetypes.guess_type(filename, strict=False)
    # A compressed-encoding guess (x.tar.gz -> tar + gzip) describes the wrong bytes.
    if guessed is None or encoding is not None:
        return "application", "octet-stream"
    maintype, _, subtype = guessed.partition("/")
    return maintype, subtype


def _filename_sections(filename: str) -> list[str]:
    """``filename`` percent-encoded as UTF-8, cut between characters into short sections."""
    sections, start, width = [], 0, 0
    for index, char in enumerate(filename):
        char_width = 1 if char in _UNRESERVED else 3 * len(char.encode())
        if width + char_width > _FILENAME_SECTION and index > start:
            sections.append(quote(filename[start:index], safe=""))
            start, width = index, 0
        width += char_width
    sections.append(quote(filename[start:], safe=""))
    return sections


def _attachment(filename: str, data: bytes) -> Message:
    maintype, subtype = _content_type(filename)
    part = Message(policy=_POLICY)
    part["Content-Type"] = f"{maintype}/{subtype}"
    part["Content-Transfer-Encoding"] = "base64"
    if filename.isascii() and len(filename) <= _FILENAME_SECTION:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    else:
        # RFC 2231: charset-tagged percent-encoding, in numbered sections when long.
        first, *rest = _filename_sections(filename)
        if rest:
            params = [f"filename*0*=utf-8''{first}"]
            params += [f"filename*{number}*={section}" for number, section in enumerate(rest, 1)]
        else:
            params = [f"filename*=utf-8''{first}"]
        part["Content-Disposition"] = "; ".join(["attachment", *params])
    part.set_payload(base64.encodebytes(data).decode("ascii"))
    return part


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
    sender_name, sender = _mailbox(from_, "from")
    recipient = _envelope_address(to, "to")

    msg: Message[str | Header, str | Header] = Message(policy=_POLICY)
    msg["From"] = _mailbox_header("From", sender_name, sender)
    msg["To"] = recipient
    if reply_to:
        msg["Reply-To"] = _mailbox_header("Reply-To", *_mailbox(reply_to, "replyTo"))
    # Rendered attributes may carry line breaks; in a subject they are only layout.
    msg["Subject"] = _header_text("Subject", " ".join(subject.split()))
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    # Not email.utils.make_msgid: it draws from the process-wide `random`, which other code seeds and replays.
    message_id = f"<{secrets.token_hex(16)}@{sender.rpartition('@')[2]}>"
    msg["Message-ID"] = message_id
    msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["MIME-Version"] = "1.0"

    if html is not None and preheader:
        html = _insert_preheader(html, preheader)
    if text is None and html is not None:
        text = html_to_text(html)
    body = _text_part(text or "", "plain")
    if html is not None:
        body = _multipart("alternative", body, _text_part(html, "html"))
    if attachments:
        body = _multipart("mixed", body, *(_attachment(name, data) for name, data in attachments.items()))
    # The outermost part is the message itself: its Content-* headers go on top.
    for name, value in body.items():
        msg[name] = value
    msg.set_payload(body.get_payload())

    for name, value in (headers or {}).items():
        if name in msg:
            raise MessageBuildError(f"header {name!r} is set by dispatcher and cannot be overridden")
        if not _HEADER_NAME_RE.fullmatch(name):
            raise MessageBuildError(f"header name {name!r} must be printable ASCII without spaces or colons")
        if _LINE_BREAK_RE.search(value):
            raise MessageBuildError(f"header {name!r} must not contain line breaks")
        msg[name] = _header_text(name, value)

    recipients = [recipient]
    for address in bcc:
        normalized = _envelope_address(address, "bcc")
        if normalized.lower() not in (r.lower() for r in recipients):
            recipients.append(normalized)
    return OutgoingMail(
        message=msg,
        envelope_from=_envelope_address(envelope_from, "envelope_from") if envelope_from else sender,
        recipients=tuple(recipients),
        message_id=message_id,
        message_key=message_key,
    )
