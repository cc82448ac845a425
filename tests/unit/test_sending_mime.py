"""Building the RFC 5322 message and its envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
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
