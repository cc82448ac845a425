"""Bounce and complaint mail read into reports: RFC 3464 delivery status notifications, RFC 5965 feedback
reports (ARF), and the non-standard bounces still common in the wild (plain-text MTA notices, Exchange NDRs,
qmail). Pure: raw message bytes in, reports out; no I/O. The inbound SMTP listener owns receiving the mail,
matching the VERP token and recording events.

Decisions:
- A report we can read that carries nothing to record returns []: a DSN whose recipients were all
  delivered/relayed/expanded, an ARF `not-spam` report (the reporter says it is NOT a complaint) and an
  ARF `auth-failure` report (RFC 6591: a forged-mail report about the domain, not a recipient's complaint).
- An ARF report whose recipient is redacted (no Original-Rcpt-To, no single To in the original) still gives a
  complaint with recipient None when the original's return path (the VERP token) is known; else Unparseable.
- Heuristics never guess: a non-standard bounce needs a machine sender (mailer-daemon/postmaster, a bounce
  subject or an MTA's wording), a failure or delay signal, and a recipient, or it is Unparseable. Auto-replies
  are refused before any heuristic runs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from typing import Literal

Kind = Literal["bounced", "deferred", "complained"]
BounceType = Literal["hard", "soft"]
Method = Literal["dsn", "arf", "heuristic"]
Tone = Literal["gave-up", "delayed", "failed"]
Fields = list[tuple[str, str]]  # (lowercased name, value) in order; report fields may repeat

MAX_REASON = 1000
_MAX_TEXT = 200_000  # characters of notification text the heuristics read (bounds the regex work)
_MAX_PARTS = 200
_MAX_MENTIONS = 1000  # address mentions the heuristics weigh
_MAX_PASSAGE = 2000  # characters read about one mention
_MAX_RECIPIENTS = 100  # reports from one non-standard bounce
_DSN_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_ORIGINAL_MESSAGE_TYPES = {"message/rfc822", "message/global", "message/global-headers"}
_ORIGINAL_HEADER_TYPES = {"text/rfc822-headers"}
_NOT_COMPLAINTS = {"not-spam", "auth-failure"}
_SYSTEM_LOCALS = {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "maildaemon", "postmaster"}


@dataclass(frozen=True, slots=True)
class Report:
    """One event a bounce or complaint carries, for one recipient."""

    kind: Kind
    recipient: str | None  # lowercased address, no "rfc822;" prefix
    bounce_type: BounceType | None  # bounced only: 5.x.x → hard, 4.x.x → soft
    status: str | None  # enhanced status code, "5.1.1"
    smtp_code: int | None  # 550
    reason: str | None  # diagnostic text without its "smtp;" type, at most MAX_REASON characters
    original_message_id: str | None  # without <>
    original_return_path: str | None  # the original's envelope sender, without <>, case kept (the VERP token)
    feedback_type: str | None  # ARF Feedback-Type, lowercased
    method: Method


class Unparseable(Exception):
    """Mail that is not a bounce or complaint this module can read. `reason` is a short fixed label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Original:
    message_id: str | None = None
    return_path: str | None = None
    recipients: tuple[str, ...] = ()  # To and Cc
    senders: tuple[str, ...] = ()  # From and Sender: never a failed recipient

    @property
    def found(self) -> bool:
        return self.message_id is not None or self.return_path is not None


def parse(raw: bytes, *, max_bytes: int = 10 * 2**20) -> list[Report]:
    """Every report the mail carries (a DSN may list several recipients). Raises Unparseable for mail that is
    not a bounce or complaint it can read; never raises anything else."""
    if not isinstance(raw, bytes | bytearray):
        raise Unparseable("not bytes")
    if len(raw) > max_bytes:
        raise Unparseable("too large")
    try:
        return _read(bytes(raw))
    except Unparseable:
        raise
    except Exception as exc:  # the email package on hostile input (deep nesting, odd charsets): one error type out
        raise Unparseable("malformed MIME") from exc


def _read(raw: bytes) -> list[Report]:
    # compat32: the default policy raises on some malformed headers when they are read; compat32 never does
    msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    if not msg.keys():
        raise Unparseable("no headers")
    if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        raise Unparseable("malformed MIME")  # no boundary, or the boundary never appears
    parts = list(_parts(msg))
    types = {part.get_content_type() for part in parts}
    if "message/feedback-report" in types:
        return _from_arf(parts)
    if types & _DSN_TYPES:
        return _from_dsn(msg, parts)
    if "message/disposition-notification" in types:
        raise Unparseable("read receipt")
    return _from_text(msg, parts)


def _parts(msg: Message) -> Iterator[Message]:
    """The message's parts, depth first, without descending into attached messages (the original)."""
    stack, seen = [msg], 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > _MAX_PARTS:
            raise Unparseable("too many parts")
        yield part
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            stack.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))


# --- RFC 3464 -------------------------------------------------------------------------------------------


def _from_dsn(msg: Message, parts: list[Message]) -> list[Report]:
    blocks = [block for part in parts if part.get_content_type() in _DSN_TYPES for block in _field_blocks(part)]
    original = _original(parts)
    if original.return_path is None:  # Postfix names the envelope sender in its per-message fields
        sender = next(
            (_return_path(_strip_type(v) or "") for b in blocks if (v := _first(b, "x-postfix-sender"))), None
        )
        original = _Original(original.message_id, sender, original.recipients, original.senders)
    reports, recipients = [], 0
    for fields in blocks:
        if (recipient := _dsn_recipient(fields)) is None:
            continue
        recipients += 1
        if (report := _dsn_report(recipient, fields, original)) is not None:
            reports.append(report)
    if not recipients:  # a damaged status part: the human-readable text may still say it all
        return _from_text(msg, parts)
    return reports


def _dsn_recipient(fields: Fields) -> str | None:
    """Final-Recipient (where delivery failed, after any forwarding), else Original-Recipient."""
    for name in ("final-recipient", "original-recipient"):
        if (address := _address(_strip_type(_first(fields, name)) or "")) is not None:
            return address
    return None


def _dsn_report(recipient: str, fields: Fields, original: _Original) -> Report | None:
    diagnostic = _strip_type(_first(fields, "diagnostic-code"))
    status = _status(_first(fields, "status") or "", _DSN_STATUS) or _status(diagnostic or "", _TEXT_STATUS)
    code = _smtp_code(diagnostic or "")
    action = _token(_first(fields, "action"), r"[a-z]+")
    if not action and status and status.startswith("5"):
        action = "failed"  # Action is required, but a 5.x.x status says it anyway
    if action == "failed":
        kind: Kind = "bounced"
        bounce_type = _class(status, code)
    elif action == "delayed":
        kind, bounce_type = "deferred", None
    else:
        return None  # delivered, relayed, expanded: nothing went wrong
    return Report(
        kind, recipient, bounce_type, status, code, _bounded(diagnostic),
        original.message_id, original.return_path, None, "dsn",
    )  # fmt: skip


# --- RFC 5965 -------------------------------------------------------------------------------------------


def _from_arf(parts: list[Message]) -> list[Report]:
    part = next(p for p in parts if p.get_content_type() == "message/feedback-report")
    fields = [field for block in _field_blocks(part) for field in block]
    feedback_type = _token(_first(fields, "feedback-type"), r"[a-z0-9._-]+")
    if not feedback_type:
        raise Unparseable("no feedback type")
    if feedback_type in _NOT_COMPLAINTS:
        return []
    original = _original(parts)
    return_path = original.return_path or _return_path(_first(fields, "original-mail-from") or "")
    recipients: list[str | None] = list(
        dict.fromkeys(a for v in _all(fields, "original-rcpt-to") if (a := _address(v)))
    )
    if not recipients and len(original.recipients) == 1:
        recipients = [original.recipients[0]]
    if not recipients:
        if return_path is None:
            raise Unparseable("no recipient")
        recipients = [None]  # redacted by the reporter; the VERP token in the return path still identifies it
    return [
        Report("complained", r, None, None, None, None, original.message_id, return_path, feedback_type, "arf")
        for r in recipients
    ]


# --- non-standard bounces -------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|abwesenheit|"
    r"r[ée]ponse automatique|respuesta autom[áa]tica|vacation|on holiday|away from (?:the|my) office",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|returned to sender|delivery (?:status notification|failure|failed|has failed|"
    r"problem|report|notification|delayed)|mail delivery (?:failed|failure|system|subsystem)|failure notice|"
    r"delayed mail|non[- ]?delivery|could not (?:be )?deliver|message not delivered|warning: message .{0,40}delayed",
    re.IGNORECASE,
)
_MTA_SIGNATURE = re.compile(
    r"qmail-send program|created automatically by mail delivery software|this is the mail system at host|"
    r"delivery has failed to these recipients|diagnostic information for administrators|"
    r"could not be delivered to one or more (?:of its )?recipients|following addresses had permanent fatal errors|"
    r"wasn'?t able to deliver your message|your message did not reach some or all of the intended recipients",
    re.IGNORECASE,
)
_FAILED = re.compile(
    r"delivery has failed|could ?n[o']?t be delivered|couldn'?t be delivered|(?:wasn'?t|was not) able to deliver|"
    r"unable to deliver|undeliverable|undelivered|permanent (?:fatal )?error|given up|giving up|did not reach|"
    r"delivery to the following recipients? failed|failed permanently|message not delivered|returned mail|"
    r"mail delivery failed|delivery failure|following address(?:\(es\)|es)? failed|cannot be reached",
    re.IGNORECASE,
)
_DELAYED = re.compile(
    r"\bdelayed\b|not (?:yet )?been delivered|will (?:continue|keep) (?:trying|to try)|attempts will continue|"
    r"will (?:be )?retr(?:y|ied)|still (?:being )?retr|temporary (?:failure|error|problem)|warning message only|"
    r"do not need to resend",
    re.IGNORECASE,
)
_GAVE_UP = re.compile(
    r"given up|giving up|permanent|not going to try again|failed permanently|will not (?:be )?retr", re.I
)
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>-]*(?:original message(?: headers)?|this is a copy of the message(?:'s headers|, including all the headers)|"
    r"below this line is a copy of the (?:message|mail header)|(?:unsent|original|returned) message follows|"
    r"message headers? follows?|undelivered message headers?)[ \t:.-]*$",
    re.IGNORECASE | re.MULTILINE,
)


def _from_text(msg: Message, parts: list[Message]) -> list[Report]:
    if _is_auto_reply(msg):
        raise Unparseable("auto-reply")
    failure, quoted = _split_at_original(_notification_text(parts))
    signals = _subject(msg) + "\n" + failure
    if not _looks_like_bounce(msg, failure):
        raise Unparseable("not a bounce")
    if not (_FAILED.search(signals) or _DELAYED.search(signals)):
        raise Unparseable("no failure signal")
    original = _original(parts)
    if not original.found:
        original = _original_from(_quoted_headers(quoted))
    found = _failed_recipients(msg, failure, original)
    if not found:
        raise Unparseable("no recipient")
    tone = _tone(signals)
    return [
        _text_report(address, passage, failure, tone, original, len(found) == 1) for address, passage in found.items()
    ]


def _is_auto_reply(msg: Message) -> bool:
    if _AUTO_SUBJECT.search(_subject(msg)):
        return True
    if any(msg.get(name) is not None for name in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if (_header(msg, "precedence") or "").lower() == "auto_reply":
        return True
    # MTAs mark their own bounces auto-replied too (Exim, Postfix): only a person's mailbox replying counts here
    auto = (_header(msg, "auto-submitted") or "").lower().startswith("auto-replied")
    return auto and not _is_system(msg)


def _is_system(msg: Message) -> bool:
    senders = _addresses(_header(msg, "from"))
    return any(a.partition("@")[0] in _SYSTEM_LOCALS for a in senders)


def _looks_like_bounce(msg: Message, failure: str) -> bool:
    return _is_system(msg) or bool(_BOUNCE_SUBJECT.search(_subject(msg))) or bool(_MTA_SIGNATURE.search(failure))


def _notification_text(parts: list[Message]) -> str:
    texts = [_text(p) for p in parts if p.get_content_type() == "text/plain"]
    if not any(t.strip() for t in texts):
        texts = [_html_text(_text(p)) for p in parts if p.get_content_type() == "text/html"]
    return "\n\n".join(texts)[:_MAX_TEXT]


def _split_at_original(text: str) -> tuple[str, str]:
    """The notification itself, and what follows the line that introduces the quoted original."""
    match = _ORIGINAL_MARKER.search(text)
    return (text[: match.start()], text[match.end() :]) if match else (text, "")


def _failed_recipients(msg: Message, failure: str, original: _Original) -> dict[str, str]:
    """Each address the notification reports on, with the passage that says the most about it."""
    own = {a for name in ("from", "to", "reply-to", "sender", "return-path") for a in _addresses(_header(msg, name))}
    own |= set(original.senders) | {(original.return_path or "").lower(), (original.message_id or "").lower()}
    found: dict[str, str] = {}
    for mention, match in enumerate(_ADDRESS_IN_TEXT.finditer(failure)):
        if mention == _MAX_MENTIONS:
            break
        address = _address(match.group().strip("'\""))
        if address is None or address in own or address.partition("@")[0] in _SYSTEM_LOCALS:
            continue
        passage = _passage(failure, match.start())
        if address not in found or (_has_code(passage) and not _has_code(found[address])):
            found[address] = passage
    about = {a: p for a, p in found.items() if _is_about(a, p)}
    # the original's own To names the recipient when the notification mentions other addresses too
    chosen = {a: p for a, p in about.items() if a in original.recipients} or about
    return dict(list(chosen.items())[:_MAX_RECIPIENTS])


def _passage(text: str, at: int) -> str:
    """A mention's line and what follows it up to the next blank line (bounded): the notice's words about it."""
    newline = text.rfind("\n", max(0, at - 500), at)
    start = newline + 1 if newline >= 0 else max(0, at - 500)
    blank = _BLANK_LINE.search(text, at, at + _MAX_PASSAGE)
    return text[start : blank.start() if blank else at + _MAX_PASSAGE]


def _is_about(address: str, passage: str) -> bool:
    """A passage reports on an address when it carries a code or failure wording, or opens with the address
    (the per-recipient layout of qmail, Exim, Postfix and Exchange notices)."""
    lead = passage.lstrip().split(None, 1)
    opens = bool(lead) and address in lead[0].lower()
    return opens or _has_code(passage) or bool(_FAILED.search(passage) or _DELAYED.search(passage))


def _text_report(address: str, passage: str, failure: str, tone: Tone, original: _Original, single: bool) -> Report:
    status, code = _status(passage, _TEXT_STATUS), _smtp_code(passage)
    if single and status is None and code is None:
        status, code = _status(failure, _TEXT_STATUS), _smtp_code(failure)
    kind, bounce_type = _text_kind(_class(status, code), tone)
    return Report(
        kind, address, bounce_type, status, code, _text_reason(passage),
        original.message_id, original.return_path, None, "heuristic",
    )  # fmt: skip


def _tone(signals: str) -> Tone:
    """What the notice's wording says happened: gave up (permanent), still trying (delayed), or just failed."""
    if _GAVE_UP.search(signals):
        return "gave-up"
    return "delayed" if _DELAYED.search(signals) else "failed"


def _text_kind(cls: BounceType | None, tone: Tone) -> tuple[Kind, BounceType | None]:
    """The status class decides first; the wording only where the notification gives no code."""
    if cls == "hard":
        return "bounced", "hard"
    if tone == "delayed":
        return "deferred", None
    if cls == "soft":
        return "bounced", "soft"
    return "bounced", ("hard" if tone == "gave-up" else None)


def _text_reason(passage: str) -> str | None:
    text = " ".join(passage.split())
    starts = [m.start() for m in (_TEXT_STATUS.search(text), _SMTP_CODE.search(text)) if m]
    if starts:
        text = text[min(starts) :]
    else:  # no code: the passage without the leading address
        text = re.sub(r"^\S*@\S*\s*", "", text)
    text = text.rstrip(" '#")
    if text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip()
    return _bounded(text)


def _quoted_headers(text: str) -> Fields:
    """The header block quoted after the marker line, possibly indented or '>'-quoted."""
    fields: Fields = []
    lines = text.lstrip("\n").split("\n")[:500]
    indent = None
    for line in lines:
        line = re.sub(r"^(?:> ?)+", "", line)
        if indent is None:
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
        if not line.strip():
            break
        body = line[indent:] if line[:indent].isspace() or indent == 0 else line.lstrip()
        if body[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + body.strip())
            continue
        match = re.match(r"([!-9;-~]{1,76}):[ \t]?(.*)$", body)
        if match is None:
            break
        fields.append((match.group(1).lower(), match.group(2)))
    return fields


# --- the original message -------------------------------------------------------------------------------


def _original(parts: list[Message]) -> _Original:
    for part in parts:
        ctype = part.get_content_type()
        if ctype in _ORIGINAL_MESSAGE_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return _original_from(_fields(payload[0]))
        elif ctype in _ORIGINAL_HEADER_TYPES:
            return _original_from(_fields(HeaderParser(policy=policy.compat32).parsestr(_text(part))))
    return _Original()


def _original_from(fields: Fields) -> _Original:
    recipients = [a for name in ("to", "cc") for v in _all(fields, name) for a in _addresses(v)]
    senders = [a for name in ("from", "sender") for v in _all(fields, name) for a in _addresses(v)]
    return _Original(
        _message_id(_first(fields, "message-id") or ""),
        _return_path(_first(fields, "return-path") or ""),
        tuple(dict.fromkeys(recipients)),
        tuple(dict.fromkeys(senders)),
    )


def _message_id(value: str) -> str | None:
    match = re.search(r"<([^<>\s]{1,995})>", value)
    token = match.group(1) if match else value.strip()
    return token if token and len(token) <= 995 and not any(c.isspace() or c in "<>" for c in token) else None


def _return_path(value: str) -> str | None:
    match = re.search(r"<([^<>\s]{0,998})>", value)
    token = match.group(1) if match else value.strip()
    return token if "@" in token and len(token) <= 998 and not any(c.isspace() or c in "<>" for c in token) else None


# --- fields, headers, text ------------------------------------------------------------------------------


def _field_blocks(part: Message) -> list[Fields]:
    """A report part's blank-line-separated field blocks. The email package parses message/delivery-status
    into one sub-message per block and other message/* types into a single sub-message whose body holds
    any further blocks; a part it left as text is split here."""
    payload = part.get_payload()
    if isinstance(payload, str):
        return _blocks_from_text(_text(part))
    blocks: list[Fields] = []
    for sub in payload:
        if not isinstance(sub, Message):
            continue
        if fields := _fields(sub):
            blocks.append(fields)
        body = sub.get_payload()
        if isinstance(body, str) and body.strip():
            blocks.extend(_blocks_from_text(body))
    return blocks


def _blocks_from_text(text: str) -> list[Fields]:
    blocks = []
    for chunk in _BLANK_LINE.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        fields: Fields = []
        for line in chunk.split("\n"):
            if line[:1] in (" ", "\t") and fields:
                fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
            elif (match := re.match(r"([!-9;-~]{1,76}):(.*)$", line)) is not None:
                fields.append((match.group(1).lower(), match.group(2).strip()))
        if fields:
            blocks.append(fields)
    return blocks


def _fields(msg: Message) -> Fields:
    return [(name.lower(), _clean(str(value))) for name, value in msg.items()]


def _token(value: str | None, pattern: str) -> str:
    """The leading token of a field ('failed (bad address)' → 'failed'), lowercased; '' when there is none."""
    match = re.match(pattern, (value or "").strip().lower())
    return match.group() if match else ""


def _first(fields: Fields, name: str) -> str | None:
    return next((value for key, value in fields if key == name), None)


def _all(fields: Fields, name: str) -> list[str]:
    return [value for key, value in fields if key == name]


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else _clean(str(value))


def _subject(msg: Message) -> str:
    value = msg.get("subject")
    if value is None:
        return ""
    try:
        return _clean(str(make_header(decode_header(str(value)))))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return _clean(str(value))


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError, TypeError):
        text = payload.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _html_text(markup: str) -> str:
    """Markup to text with paragraphs kept apart, as the plain-text heuristics expect."""
    markup = " ".join(markup[:_MAX_TEXT].split())  # whitespace in HTML is insignificant
    markup = re.sub(r"(?i)<br\b[^>]{0,200}>", "\n", markup)
    markup = re.sub(r"(?i)</(?:p|div|tr|table|h\d)\s{0,20}>", "\n\n", markup)
    return html.unescape(re.sub(r"<[^>]{0,2000}>", "", markup))


def _clean(value: str) -> str:
    """Lone surrogates (undecodable header bytes) and control characters out, whitespace collapsed."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", " ".join(value.split()))


def _bounded(value: str | None) -> str | None:
    if value is None:
        return None
    value = _clean(value)[:MAX_REASON]
    return value or None


# --- addresses and codes --------------------------------------------------------------------------------

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ADDRESS = re.compile(r"[^\s<>@,;:\"()\[\]\\]{1,64}@[^\s<>@,;:\"()\[\]\\]{1,253}")
_ADDRESS_IN_TEXT = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
_DSN_STATUS = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_TEXT_STATUS = re.compile(r"(?<![\w.])([45]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_SMTP_CODE = re.compile(r"(?<![\w.:/-])([45]\d\d)(?=[ \t-]|$)", re.MULTILINE)


def _address(value: str) -> str | None:
    value = value.strip().strip("<>").strip().rstrip(".").lower()
    return value if len(value) <= 254 and _ADDRESS.fullmatch(value) else None


def _addresses(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        pairs = getaddresses([value])
    except (ValueError, TypeError, IndexError):
        return []
    return [a for _, raw in pairs if (a := _address(raw))]


def _strip_type(value: str | None) -> str | None:
    """'rfc822; user@example.org' → 'user@example.org', 'smtp; 550 …' → '550 …' (RFC 3464 typed fields)."""
    if value is None:
        return None
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and re.fullmatch(r"[A-Za-z0-9-]{1,32}", kind.strip()) else value.strip()


def _status(text: str, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None


def _smtp_code(text: str) -> int | None:
    match = _SMTP_CODE.search(text)
    return int(match.group(1)) if match else None


def _has_code(text: str) -> bool:
    return bool(_TEXT_STATUS.search(text) or _SMTP_CODE.search(text))


def _class(status: str | None, code: int | None) -> BounceType | None:
    first = status[:1] if status else str(code)[:1] if code else ""
    return "hard" if first == "5" else "soft" if first == "4" else None
