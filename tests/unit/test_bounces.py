"""Bounce and complaint mail read into reports (dispatcher.inbound.bounces), against fixtures written the way
Postfix, Exchange, Sendmail, Exim, qmail and an ARF feedback loop write them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.inbound.bounces import MAX_REASON, BounceType, Method, Report, Unparseable, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
RETURN_PATH = "bounces+7Kq2mB9xT4@mail.example.com"
MESSAGE_ID = "abc123@example.com"
BOUNCES = sorted(p.name for p in FIXTURES.glob("*.eml") if p.name not in {"normal_message.eml", "out_of_office.eml"})


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def edited(name: str, old: str, new: str) -> bytes:
    raw = load(name)
    assert old.encode() in raw, f"{old!r} not in {name}"
    return raw.replace(old.encode(), new.encode())


def edited_bytes(raw: bytes, old: str, new: str) -> bytes:
    assert old.encode() in raw, f"{old!r} not found"
    return raw.replace(old.encode(), new.encode())


def refusal(raw: bytes, **kwargs: int) -> str:
    with pytest.raises(Unparseable) as caught:
        parse(raw, **kwargs)
    return caught.value.reason


def bounce(
    recipient: str,
    bounce_type: BounceType | None,
    status: str | None,
    code: int | None,
    reason: str | None,
    method: Method,
) -> Report:
    return Report("bounced", recipient, bounce_type, status, code, reason, MESSAGE_ID, RETURN_PATH, None, method)


# --- RFC 3464 delivery status notifications -------------------------------------------------------------


def test_a_postfix_dsn_with_5_1_1_is_a_hard_bounce_for_its_final_recipient() -> None:
    assert parse(load("postfix_dsn_5_1_1.eml")) == [
        bounce(
            "jane@example.org",
            "hard",
            "5.1.1",
            550,
            "550 5.1.1 <jane@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
            "dsn",
        )
    ]


def test_a_dsn_failed_with_4_2_2_mailbox_full_is_a_soft_bounce() -> None:
    assert parse(load("postfix_dsn_4_2_2_mailbox_full.eml")) == [
        bounce("full@example.org", "soft", "4.2.2", 452, "452 4.2.2 <full@example.org>: Mailbox full", "dsn")
    ]


def test_a_dsn_with_action_delayed_is_a_deferral_with_its_status_and_no_bounce_type() -> None:
    [report] = parse(load("postfix_delay.eml"))
    assert report == Report(
        "deferred",
        "slow@example.org",
        None,
        "4.4.1",
        None,
        "connect to mx.example.org[192.0.2.20]:25: Connection timed out",
        MESSAGE_ID,
        RETURN_PATH,
        None,
        "dsn",
    )


def test_a_multi_recipient_dsn_reports_each_failed_recipient_and_skips_the_relayed_one() -> None:
    reports = parse(load("postfix_dsn_multi_recipient.eml"))
    assert [(r.recipient, r.kind, r.bounce_type, r.status, r.smtp_code) for r in reports] == [
        ("alice@example.org", "bounced", "hard", "5.1.1", 550),
        ("bob@example.net", "bounced", "hard", "5.2.2", 552),
        ("carol@example.com", "bounced", "soft", "4.7.1", 450),
    ]
    assert {r.original_message_id for r in reports} == {MESSAGE_ID}


def test_an_exchange_dsn_is_read_from_its_delivery_status_part_with_the_recipient_lowercased() -> None:
    assert parse(load("exchange_dsn.eml")) == [
        bounce(
            "jane.doe@example.org",
            "hard",
            "5.1.10",
            550,
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient Jane.Doe@Example.org not found by SMTP address lookup",
            "dsn",
        )
    ]


def test_a_dsn_whose_recipients_were_all_delivered_carries_no_reports() -> None:
    raw = edited("postfix_dsn_5_1_1.eml", "Action: failed\nStatus: 5.1.1", "Action: delivered\nStatus: 2.0.0")
    assert parse(raw) == []


def test_the_original_recipient_stands_in_when_the_final_recipient_is_missing() -> None:
    raw = edited("postfix_dsn_5_1_1.eml", "Final-Recipient: rfc822; jane@example.org\n", "")
    [report] = parse(raw)
    assert (report.recipient, report.method) == ("jane@example.org", "dsn")


def test_the_final_recipient_wins_over_the_original_recipient_when_mail_was_forwarded() -> None:
    raw = edited(
        "postfix_dsn_5_1_1.eml",
        "Final-Recipient: rfc822; jane@example.org",
        "Final-Recipient: rfc822; jane@forward.example",
    )
    assert [r.recipient for r in parse(raw)] == ["jane@forward.example"]


def test_a_dsn_without_a_status_field_takes_the_status_from_its_diagnostic_code() -> None:
    raw = edited("postfix_dsn_4_2_2_mailbox_full.eml", "Status: 4.2.2\n", "")
    [report] = parse(raw)
    assert (report.kind, report.bounce_type, report.status) == ("bounced", "soft", "4.2.2")


def test_a_dsn_status_with_a_comment_is_still_read() -> None:
    raw = edited(
        "postfix_dsn_5_1_1.eml",
        "Action: failed\nStatus: 5.1.1",
        "Action: failed (bad address)\nStatus: 5.1.1 (user unknown)",
    )
    [report] = parse(raw)
    assert (report.kind, report.status) == ("bounced", "5.1.1")


def test_an_rfc_6533_global_delivery_status_reads_like_a_dsn() -> None:
    """The email package parses message/global-delivery-status as one message: the first block becomes its
    headers and the per-recipient blocks its body, which must be read as text."""
    raw = edited(
        "postfix_dsn_5_1_1.eml", "Content-Type: message/delivery-status", "Content-Type: message/global-delivery-status"
    )
    assert parse(raw) == parse(load("postfix_dsn_5_1_1.eml"))


def test_the_envelope_sender_postfix_names_stands_in_for_a_missing_return_path() -> None:
    raw = edited("postfix_dsn_5_1_1.eml", "Return-Path: <bounces+7Kq2mB9xT4@mail.example.com>\n", "")
    [report] = parse(raw)
    assert report.original_return_path == RETURN_PATH


def test_a_dsn_without_an_attached_original_has_no_original_fields() -> None:
    raw = load("postfix_dsn_5_1_1.eml")
    raw = raw[: raw.index(b"--4Zb1Yq0k3Vz9sWJ.1741083304/mx.example.net\nContent-Description: Undelivered Message")]
    raw = edited_bytes(raw, "X-Postfix-Sender: rfc822; bounces+7Kq2mB9xT4@mail.example.com\n", "")
    [report] = parse(raw)
    assert (report.original_message_id, report.original_return_path) == (None, None)
    assert report.recipient == "jane@example.org"


def test_the_reason_is_bounded_to_1000_characters() -> None:
    raw = edited("postfix_dsn_5_1_1.eml", "mailbox table\n\n--", "mailbox table" + " padding" * 400 + "\n\n--")
    [report] = parse(raw)
    assert report.reason is not None and len(report.reason) == MAX_REASON


def test_a_dsn_cut_before_its_status_part_falls_back_to_its_notification_text() -> None:
    raw = load("postfix_dsn_5_1_1.eml")
    raw = raw[: raw.index(b"--4Zb1Yq0k3Vz9sWJ.1741083304/mx.example.net\nContent-Description: Delivery report")]
    [report] = parse(raw)
    assert (report.method, report.recipient, report.bounce_type, report.status) == (
        "heuristic",
        "jane@example.org",
        "hard",
        "5.1.1",
    )


# --- RFC 5965 feedback reports --------------------------------------------------------------------------


def test_an_arf_abuse_report_is_a_complaint_from_its_original_recipient() -> None:
    assert parse(load("arf_abuse.eml")) == [
        Report("complained", "pat@hotmail.example", None, None, None, None, MESSAGE_ID, RETURN_PATH, "abuse", "arf")
    ]


@pytest.mark.parametrize("feedback_type", ["fraud", "virus", "other", "opt-out"])
def test_other_feedback_types_are_complaints_that_carry_their_type(feedback_type: str) -> None:
    [report] = parse(edited("arf_abuse.eml", "Feedback-Type: abuse", f"Feedback-Type: {feedback_type}"))
    assert (report.kind, report.feedback_type) == ("complained", feedback_type)


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_feedback_that_is_not_a_recipients_complaint_carries_no_report(feedback_type: str) -> None:
    """not-spam says the opposite of a complaint; auth-failure (RFC 6591) is about forged mail, not a recipient."""
    assert parse(edited("arf_abuse.eml", "Feedback-Type: abuse", f"Feedback-Type: {feedback_type}")) == []


def test_without_original_rcpt_to_the_complainer_is_the_original_messages_to() -> None:
    raw = edited("arf_abuse.eml", "Original-Rcpt-To: <Pat@Hotmail.example>\n", "")
    raw = edited_bytes(raw, "To: Pat@Hotmail.example", "To: Pat Q <pq@hotmail.example>")
    assert [r.recipient for r in parse(raw)] == ["pq@hotmail.example"]


def test_a_complaint_whose_recipient_is_redacted_still_reports_with_its_verp_return_path() -> None:
    raw = edited("arf_abuse.eml", "Original-Rcpt-To: <Pat@Hotmail.example>\n", "")
    raw = edited_bytes(raw, "To: Pat@Hotmail.example", "To: undisclosed-recipients:;")
    [report] = parse(raw)
    assert (report.kind, report.recipient, report.original_return_path) == ("complained", None, RETURN_PATH)


def test_a_complaint_with_neither_recipient_nor_return_path_is_unparseable() -> None:
    raw = edited("arf_abuse.eml", "Original-Rcpt-To: <Pat@Hotmail.example>\n", "")
    raw = edited_bytes(raw, "To: Pat@Hotmail.example", "To: undisclosed-recipients:;")
    raw = edited_bytes(raw, "Return-Path: <bounces+7Kq2mB9xT4@mail.example.com>\nReceived", "Received")
    raw = edited_bytes(raw, "Original-Mail-From: <bounces+7Kq2mB9xT4@mail.example.com>\n", "")
    assert refusal(raw) == "no recipient"


def test_original_mail_from_stands_in_for_the_originals_return_path() -> None:
    raw = edited("arf_abuse.eml", "Return-Path: <bounces+7Kq2mB9xT4@mail.example.com>\nReceived", "Received")
    [report] = parse(raw)
    assert report.original_return_path == RETURN_PATH


def test_a_message_id_without_angle_brackets_is_still_taken() -> None:
    """RFC 5965's own example quotes an original whose Message-ID lacks the angle brackets."""
    [report] = parse(edited("arf_abuse.eml", "Message-ID: <abc123@example.com>", "Message-ID: abc123@example.com"))
    assert report.original_message_id == MESSAGE_ID


def test_a_feedback_report_without_a_feedback_type_is_unparseable() -> None:
    assert refusal(edited("arf_abuse.eml", "Feedback-Type: abuse\n", "")) == "no feedback type"


# --- non-standard bounces -------------------------------------------------------------------------------


def test_a_plain_text_sendmail_bounce_is_read_with_the_quoted_original_headers() -> None:
    assert parse(load("sendmail_plain_text.eml")) == [
        bounce("ghost@example.net", "hard", "5.1.1", 550, "550 5.1.1 <ghost@example.net>... User unknown", "heuristic")
    ]


def test_an_exim_bounce_the_mta_marked_auto_replied_is_still_a_bounce() -> None:
    assert parse(load("exim_plain_text.eml")) == [
        bounce(
            "jane@example.org",
            "hard",
            "5.1.1",
            550,
            "550 5.1.1 <jane@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
            "heuristic",
        )
    ]


def test_an_exim_delay_warning_is_a_deferral() -> None:
    [report] = parse(load("exim_delay.eml"))
    assert (report.kind, report.recipient, report.bounce_type, report.status, report.smtp_code) == (
        "deferred",
        "slow@example.org",
        None,
        "4.7.1",
        451,
    )
    assert (report.original_message_id, report.original_return_path) == (MESSAGE_ID, RETURN_PATH)


def test_an_exchange_ndr_without_a_dsn_part_is_a_hard_bounce_for_the_recipient_in_its_diagnostics() -> None:
    assert parse(load("exchange_ndr_text.eml")) == [
        bounce(
            "mark.lee@corp.example.org",
            "hard",
            "5.1.1",
            550,
            "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
            "heuristic",
        )
    ]


def test_a_text_only_exchange_ndr_reads_remote_server_returned_and_the_quoted_headers() -> None:
    assert parse(load("exchange_2007_ndr_text_only.eml")) == [
        bounce(
            "sam.roe@corp.example.org",
            "hard",
            "5.1.1",
            550,
            "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
            "heuristic",
        )
    ]


def test_an_exchange_ndr_with_only_an_html_body_is_still_read() -> None:
    raw = load("exchange_ndr_text.eml")
    start = raw.index(b'Content-Type: text/plain; charset="us-ascii"')
    end = raw.index(b"--_001_2f3e4d5c6b7a_\nContent-Type: text/html")
    [report] = parse(raw[:start] + b'Content-Type: text/plain; charset="us-ascii"\n\n\n' + raw[end:])
    assert (report.recipient, report.bounce_type, report.status) == ("mark.lee@corp.example.org", "hard", "5.1.1")


def test_a_qmail_permanent_error_is_a_hard_bounce() -> None:
    assert parse(load("qmail.eml")) == [
        bounce(
            "nobody@example.org",
            "hard",
            "5.1.1",
            550,
            "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown Giving up on 192.0.2.10.",
            "heuristic",
        )
    ]


def test_a_qmail_permanent_error_without_any_code_is_hard_by_its_wording() -> None:
    raw = edited(
        "qmail.eml",
        "192.0.2.10 does not like recipient.\nRemote host said: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown\nGiving up on 192.0.2.10.",
        "Sorry, I couldn't find any host by that name.",
    )
    [report] = parse(raw)
    assert (report.kind, report.bounce_type, report.status, report.smtp_code) == ("bounced", "hard", None, None)
    assert report.reason == "Sorry, I couldn't find any host by that name."


def test_a_qmail_temporary_error_is_a_deferral() -> None:
    raw = edited(
        "qmail.eml",
        "This is a permanent error; I've given up. Sorry it didn't work out.",
        "This is a temporary error; I will keep trying.",
    )
    raw = edited_bytes(raw, "550 5.1.1", "451 4.3.0").replace(b"Giving up on 192.0.2.10.\n", b"")
    [report] = parse(raw)
    assert (report.kind, report.bounce_type, report.status, report.smtp_code) == ("deferred", None, "4.3.0", 451)


def test_a_5xx_code_makes_a_bounce_even_when_the_text_talks_of_delay() -> None:
    raw = edited("exim_delay.eml", "451 4.7.1 Greylisted, please try again later", "550 5.7.1 Rejected by policy")
    [report] = parse(raw)
    assert (report.kind, report.bounce_type) == ("bounced", "hard")


def test_addresses_in_the_quoted_original_are_never_taken_for_failed_recipients() -> None:
    raw = load("qmail.eml") + b"PS: 550 5.1.1 <someone.else@example.org> was also unknown\n"
    assert [r.recipient for r in parse(raw)] == ["nobody@example.org"]


def test_the_bounce_senders_own_addresses_are_never_taken_for_failed_recipients() -> None:
    raw = edited(
        "qmail.eml",
        "Hi. This is the qmail-send program",
        "Hi, bounces+7Kq2mB9xT4@mail.example.com. This is the qmail-send program",
    )
    assert [r.recipient for r in parse(raw)] == ["nobody@example.org"]


# --- refusals -------------------------------------------------------------------------------------------


def test_garbage_bytes_are_unparseable() -> None:
    assert refusal(b"\x00\xff\xfe garbage \x89PNG\r\n\x1a\n" * 20) in {"no headers", "not a bounce"}


def test_an_empty_message_is_unparseable() -> None:
    assert refusal(b"") == "no headers"


def test_a_multipart_report_without_a_boundary_is_malformed() -> None:
    raw = edited(
        "postfix_dsn_5_1_1.eml",
        'report-type=delivery-status;\n\tboundary="4Zb1Yq0k3Vz9sWJ.1741083304/mx.example.net"',
        "report-type=delivery-status",
    )
    assert refusal(raw) == "malformed MIME"


def test_a_dsn_cut_off_before_its_first_part_is_malformed() -> None:
    raw = load("postfix_dsn_5_1_1.eml")
    assert refusal(raw[: raw.index(b"This is a MIME-encapsulated message.")]) == "malformed MIME"


def test_mail_over_max_bytes_is_refused_as_too_large() -> None:
    raw = load("postfix_dsn_5_1_1.eml")
    assert refusal(raw, max_bytes=len(raw) - 1) == "too large"
    assert parse(raw, max_bytes=len(raw))


def test_a_normal_message_is_not_a_bounce_even_with_an_address_and_a_550_in_it() -> None:
    assert refusal(load("normal_message.eml")) == "not a bounce"


def test_an_out_of_office_reply_is_refused_as_an_auto_reply() -> None:
    assert refusal(load("out_of_office.eml")) == "auto-reply"


def test_a_persons_auto_replied_message_is_an_auto_reply_whatever_its_subject() -> None:
    raw = edited("out_of_office.eml", "Subject: Automatic reply: Your receipt", "Subject: Undeliverable: Your receipt")
    raw = edited_bytes(raw, "Auto-Submitted: auto-generated", "Auto-Submitted: auto-replied")
    assert refusal(raw) == "auto-reply"


def test_a_mailer_daemon_notice_without_a_failure_signal_is_unparseable() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: bounces+7Kq2mB9xT4@mail.example.com\nSubject: Notice\n\n"
        b"Your message to <jane@example.org> was accepted for relay.\n"
    )
    assert refusal(raw) == "no failure signal"


def test_a_bounce_that_names_no_recipient_is_unparseable() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: bounces+7Kq2mB9xT4@mail.example.com\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.net.\nThis is a permanent error; I've given up.\n"
    )
    assert refusal(raw) == "no recipient"


def test_a_dsn_whose_status_part_and_text_name_no_recipient_is_unparseable() -> None:
    raw = edited(
        "postfix_dsn_5_1_1.eml",
        "Final-Recipient: rfc822; jane@example.org\nOriginal-Recipient: rfc822;jane@example.org\n",
        "",
    )
    raw = edited_bytes(
        raw, "<jane@example.org>: host mx.example.org[192.0.2.10] said: 550 5.1.1\n    <jane@example.org>: ", ""
    )
    assert refusal(raw) == "no recipient"


def test_a_notice_listing_thousands_of_addresses_reports_at_most_100() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n\nThis is a permanent error; I've given up.\n\n"
    )
    raw += b"".join(b"<user%d@example.org>:\n550 5.1.1 unknown\n\n" % i for i in range(1000))
    reports = parse(raw)
    assert len(reports) == 100
    assert {(r.kind, r.bounce_type, r.status) for r in reports} == {("bounced", "hard", "5.1.1")}


def test_the_originals_to_picks_the_recipient_when_the_notice_names_other_addresses_too() -> None:
    raw = edited(
        "qmail.eml",
        "Hi. This is",
        "<helpdesk@example.net>:\nSorry, 550 5.0.0 our helpdesk is also unknown.\n\nHi. This is",
    )
    assert [r.recipient for r in parse(raw)] == ["nobody@example.org"]


def test_a_read_receipt_is_unparseable() -> None:
    raw = (
        b'From: jane@example.org\nSubject: Read: Your receipt\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=disposition-notification; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nYour message was displayed.\n"
        b"--b\nContent-Type: message/disposition-notification\n\nFinal-Recipient: rfc822; jane@example.org\nDisposition: manual-action/MDN-sent-manually; displayed\n"
        b"--b--\n"
    )
    assert refusal(raw) == "read receipt"


# --- line endings, damage and fuzz ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BOUNCES)
def test_every_fixture_reads_the_same_with_crlf_line_endings(name: str) -> None:
    raw = load(name)
    assert parse(raw.replace(b"\n", b"\r\n")) == parse(raw)


@pytest.mark.parametrize("name", BOUNCES)
def test_every_bounce_fixture_names_the_original_message_and_its_verp_return_path(name: str) -> None:
    reports = parse(load(name))
    assert reports
    assert {(r.original_message_id, r.original_return_path) for r in reports} == {(MESSAGE_ID, RETURN_PATH)}


def reads_or_refuses(raw: bytes) -> None:
    try:
        reports = parse(raw)
    except Unparseable as exc:
        assert exc.reason
        return
    assert isinstance(reports, list)
    for report in reports:
        assert isinstance(report, Report)
        assert report.kind in {"bounced", "deferred", "complained"}
        assert report.recipient is None or report.recipient == report.recipient.lower()
        assert report.reason is None or len(report.reason) <= MAX_REASON


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_parse_on_arbitrary_bytes_only_returns_reports_or_raises_unparseable(raw: bytes) -> None:
    reads_or_refuses(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BOUNCES), st.integers(min_value=0), st.integers(min_value=0), st.binary(max_size=64))
def test_parse_on_damaged_real_bounces_only_returns_reports_or_raises_unparseable(
    name: str, cut: int, at: int, noise: bytes
) -> None:
    raw = load(name)
    raw = raw[: cut % (len(raw) + 1)]
    at %= len(raw) + 1
    reads_or_refuses(raw[:at] + noise + raw[at:])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "body",
    [
        b"a" * 200_000,
        b" " * 200_000,
        b"-" * 200_000,
        b"x@" * 100_000,
        b"<" * 200_000,
        b"550 " * 50_000,
        b"5.1.1." * 40_000,
        b"\n" * 200_000,
        b"<a@b.cd>" * 25_000,
        b"user@example.org: 550 5.1.1 unknown\n" * 5_000,
    ],
)
def test_pathological_bodies_are_read_in_bounded_time(body: bytes) -> None:
    raw = b"From: MAILER-DAEMON@mx.example.net\nSubject: Undeliverable\nContent-Type: text/html\n\n" + body
    reads_or_refuses(raw)
    reads_or_refuses(raw.replace(b"text/html", b"text/plain"))
