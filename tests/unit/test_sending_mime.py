"""Building the RFC 5322 message and its envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest

from dispatcher.sending.errors import MessageBuildError
from dispatcher.sending.mime import OutgoingMail, build_message, html_to_text

UNSUBSCRIBE = "https://mail.example.com/t/u/TOKEN"


def build(**overrides: Any) -> OutgoingMail:
    fields: dict[str, Any] = {
        "from_": "Shop <shop@example.com>",
        "to": "ada@example.com",
        "subject": "Your receipt",
        "html": "<html><body><p>Thanks!</p></body></html>",
        "text": "Thanks!",
        "message_key": "order-42",
        "unsubscribe_url": UNSUBSCRIBE,
    }
    fields.update(overrides)
    return build_message(**fields)


def reparse(mail: OutgoingMail) -> EmailMessage:
    parsed = message_from_bytes(mail.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_text_and_html_become_multipart_alternative() -> None:
    msg = reparse(build())
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Thanks!"
    assert rich is not None and "<p>Thanks!</p>" in rich.get_content()


def test_text_only_message_is_single_part() -> None:
    msg = reparse(build(html=None, text="Just text"))
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Just text"


def test_html_only_message_gets_a_generated_text_alternative() -> None:
    msg = reparse(build(html='<p>Hello <b>Ada</b></p><p>See <a href="https://x.example.com">this</a></p>', text=None))
    plain = msg.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == "Hello Ada\n\nSee this (https://x.example.com)\n"


def test_message_without_any_body_is_refused() -> None:
    with pytest.raises(MessageBuildError):
        build(html=None, text=None)


def test_html_to_text_skips_head_scripts_and_styles() -> None:
    html = "<html><head><title>T</title><style>p{}</style></head><body>A<br>B<script>x()</script></body></html>"
    assert html_to_text(html) == "A\nB\n"


def test_envelope_and_headers_carry_the_addresses() -> None:
    mail = build(reply_to="Help <help@example.com>")
    msg = reparse(mail)
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["To"] == "ada@example.com"
    assert msg["Reply-To"] == "Help <help@example.com>"
    assert mail.envelope_from == "shop@example.com"
    assert mail.recipients == ("ada@example.com",)
    assert mail.message_key == "order-42"


def test_envelope_from_can_be_a_separate_bounce_address() -> None:
    assert build(envelope_from="bounces@example.com").envelope_from == "bounces@example.com"


def test_bcc_recipients_are_in_the_envelope_only() -> None:
    mail = build(bcc=["audit@example.com", "ADA@example.com", "audit@example.com"])
    assert mail.recipients == ("ada@example.com", "audit@example.com")
    raw = mail.as_bytes()
    assert b"audit@example.com" not in raw
    assert "Bcc" not in reparse(mail)


def test_non_ascii_display_name_and_subject_are_encoded() -> None:
    mail = build(from_="Zoë Café <zoe@example.com>", subject="Größe ✓")
    assert mail.as_bytes().isascii()
    msg = reparse(mail)
    assert msg["From"] == "Zoë Café <zoe@example.com>"
    assert msg["Subject"] == "Größe ✓"


def test_line_breaks_in_a_rendered_subject_become_spaces() -> None:
    assert reparse(build(subject="Hello\r\nBcc: x@example.com"))["Subject"] == "Hello Bcc: x@example.com"
    assert "Bcc" not in reparse(build(subject="Hello\r\nBcc: x@example.com")).keys()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_", "not an address"),
        ("from_", "a@example.com\r\nBcc: victim@example.com"),
        ("to", "a@example.com, b@example.com"),
        ("reply_to", "nobody"),
        ("bcc", ["broken"]),
    ],
)
def test_address_that_rendered_invalid_is_refused(field: str, value: Any) -> None:
    with pytest.raises(MessageBuildError):
        build(**{field: value})


def test_one_click_unsubscribe_headers_are_always_set() -> None:
    msg = reparse(build())
    assert msg["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_message_id_and_date_are_generated() -> None:
    first, second = build(), build(date=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert first.message_id != second.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith("@example.com>")
    assert reparse(first)["Message-ID"] == first.message_id
    assert reparse(second)["Date"] == "Wed, 02 Jan 2030 03:04:05 +0000"


def test_custom_headers_are_added() -> None:
    msg = reparse(build(headers={"X-Campaign": "spring", "X-Ref": "42"}))
    assert (msg["X-Campaign"], msg["X-Ref"]) == ("spring", "42")


def test_custom_header_cannot_override_a_header_we_set() -> None:
    with pytest.raises(MessageBuildError):
        build(headers={"list-unsubscribe": "<https://evil.example.com>"})


def test_custom_header_with_line_break_is_refused() -> None:
    with pytest.raises(MessageBuildError):
        build(headers={"X-Evil": "a\r\nBcc: victim@example.com"})


def test_preheader_is_a_hidden_span_at_the_top_of_the_body() -> None:
    msg = reparse(build(html='<html><body class="main"><p>Hi</p></body></html>', preheader="Your <order>"))
    html = msg.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert '<body class="main"><span style="display:none!important;' in content
    assert ">Your &lt;order&gt;</span><p>Hi</p>" in content


def test_preheader_goes_first_in_an_html_fragment() -> None:
    html = reparse(build(html="<p>Hi</p>", preheader="Pre")).get_body(("html",))
    assert html is not None and html.get_content().startswith("<span ")


def test_attachments_make_the_message_mixed_with_types_by_extension() -> None:
    msg = reparse(
        build(
            attachments={
                "receipt.pdf": b"%PDF-1.7",
                "photo.JPG": b"\xff\xd8\xff",
                "notes.txt": "héllo".encode(),
                "data.unknownext": b"\x00\x01",
                "résumé.pdf": b"%PDF",
            }
        )
    )
    assert msg.get_content_type() == "multipart/mixed"
    body, *attachments = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    found = {a.get_filename(): (a.get_content_type(), a.get_payload(decode=True)) for a in attachments}
    assert found == {
        "receipt.pdf": ("application/pdf", b"%PDF-1.7"),
        "photo.JPG": ("image/jpeg", b"\xff\xd8\xff"),
        "notes.txt": ("text/plain", "héllo".encode()),
        "data.unknownext": ("application/octet-stream", b"\x00\x01"),
        "résumé.pdf": ("application/pdf", b"%PDF"),
    }
    assert all(a.get_content_disposition() == "attachment" for a in attachments)


def test_serialized_message_uses_crlf_line_endings() -> None:
    raw = build().as_bytes()
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize(
    ("from_", "name"),
    [
        ("Zoë Café <zoe@example.com>", "Zoë Café"),
        ("李小龍 <zoe@example.com>", "李小龍"),
        ("Équipe Boutique Zoë Café Paris <zoe@example.com>", "Équipe Boutique Zoë Café Paris"),
        ('"Shop, Inc. (EU)" <zoe@example.com>', "Shop, Inc. (EU)"),
        ("A" * 120 + " <zoe@example.com>", "A" * 120),
    ],
)
def test_display_name_in_any_script_reads_back_from_the_bytes(from_: str, name: str) -> None:
    mail = build(from_=from_)
    assert mail.as_bytes().isascii()
    [address] = reparse(mail)["From"].addresses
    assert (address.display_name, address.addr_spec) == (name, "zoe@example.com")


@pytest.mark.parametrize("name", ["Ünïcode Name " * 12, "李小龍" * 30])
def test_long_non_ascii_display_name_is_split_into_encoded_words(name: str) -> None:
    """Decoded per RFC 2047: Python 3.11's modern parser wrongly keeps the space between
    adjacent encoded words in a display name (CPython gh-128110)."""
    raw = build(from_=f"{name} <zoe@example.com>").as_bytes()
    assert all(len(line) <= 78 for line in header_lines(raw))
    folded = message_from_bytes(raw, policy=policy.compat32)["From"]
    assert str(make_header(decode_header(folded))) == f"{name.strip()} <zoe@example.com>"


@pytest.mark.parametrize(
    "subject",
    [
        "Größe ✓",
        "Your order " * 20,
        "Größe ✓ und noch viel mehr " * 8,
        "件名" * 60,
        "x" * 1200,
        "",
    ],
)
def test_subject_reads_back_from_the_bytes_and_long_ones_are_folded(subject: str) -> None:
    raw = build(subject=subject).as_bytes()
    assert raw.isascii()
    assert all(len(line) <= 78 for line in header_lines(raw) if not line.startswith(b"List-Unsubscribe:"))
    assert message_from_bytes(raw, policy=policy.default)["Subject"] == subject.strip()


def test_long_unsubscribe_url_stays_one_plain_value() -> None:
    """A folded or encoded-word List-Unsubscribe would break one-click unsubscribe."""
    url = "https://mail.example.com/t/u/" + "T" * 120
    msg = reparse(build(unsubscribe_url=url))
    assert msg["List-Unsubscribe"] == f"<{url}>"


@pytest.mark.parametrize(
    ("body", "transfer_encoding"),
    [
        ("Thanks!\n", "7bit"),
        ("x" * 998 + "\nshort\n", "7bit"),
        ("Grüße, Zoë ✓\nSecond line\n", "quoted-printable"),
        ("x" * 999 + "\n", "quoted-printable"),
        ("é" * 1500, "quoted-printable"),
        ("a=3D literal, trailing space \nand tab\t\n.\nFrom here\n", "7bit"),
        ("tab\t at end é\t\n", "quoted-printable"),
    ],
)
def test_text_and_html_bodies_decode_back_exactly(body: str, transfer_encoding: str) -> None:
    raw = build(text=body, html=body).as_bytes()
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = message_from_bytes(raw, policy=policy.default)
    for part in msg.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == transfer_encoding
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert payload.decode("utf-8").replace("\r\n", "\n") == body


def test_attachments_decode_back_byte_exact_with_their_names() -> None:
    data = bytes(range(256)) * 40
    names = ["résumé.pdf", "Квитанция за март " * 8 + ".pdf", 'he said "hi".txt', "a" * 150 + ".bin"]
    raw = build(attachments={name: data for name in names}).as_bytes()
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    found = {a.get_filename(): a.get_payload(decode=True) for a in msg.iter_attachments()}
    assert found == {name: data for name in names}
    assert all(a["Content-Transfer-Encoding"] == "base64" for a in msg.iter_attachments())


def test_empty_attachment_is_kept() -> None:
    msg = reparse(build(attachments={"empty.txt": b""}))
    [attachment] = msg.iter_attachments()
    assert (attachment.get_filename(), attachment.get_payload(decode=True)) == ("empty.txt", b"")


def test_non_ascii_custom_header_value_is_encoded() -> None:
    mail = build(headers={"X-Note": "Grüße ✓"})
    assert mail.as_bytes().isascii()
    assert reparse(mail)["X-Note"] == "Grüße ✓"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\rBcc: victim@example.com"},
        {"X-Evil": "a\nBcc: victim@example.com"},
        {"X-Evil": "a\u2028Bcc: victim@example.com"},
        {"X-Evil": "a\x0bb"},
        {"X-Evil: x\r\nBcc": "victim@example.com"},
        {"X Evil": "x"},
        {"": "x"},
        {"Content-Type": "text/x-evil"},
        {"mime-version": "2.0"},
        {"X-Ref": "1", "x-ref": "2"},
    ],
)
def test_custom_header_that_could_break_the_message_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(MessageBuildError):
        build(headers=headers)


@pytest.mark.parametrize(
    "subject", ["Hi\r\nBcc: victim@example.com", "Hi\u2028Bcc: victim@example.com", "Hi\x85Bcc: x"]
)
def test_no_line_break_in_a_subject_survives(subject: str) -> None:
    raw = build(subject=subject).as_bytes()
    assert b"\r\nBcc" not in raw
    assert "Bcc" not in reparse(build(subject=subject)).keys()
