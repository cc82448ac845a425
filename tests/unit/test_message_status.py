"""The status a message's events add up to, and history cursors (dispatcher.events)."""

from __future__ import annotations

import base64
from itertools import permutations
from typing import Any

import pytest

from dispatcher.errors import InvalidRequest
from dispatcher.events import ENGAGEMENT_TYPES, decode_cursor, encode_cursor, message_status

HARD: tuple[str, dict[str, Any]] = ("bounced", {"bounceType": "hard", "smtpCode": 550})
SOFT: tuple[str, dict[str, Any]] = ("bounced", {"bounceType": "soft", "smtpCode": 452})
FAILED: tuple[str, dict[str, Any]] = ("failed", {"reason": "rejected"})


def ev(type_: str) -> tuple[str, dict[str, Any]]:
    return (type_, {})


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], None),
        ([ev("queued")], "queued"),
        ([ev("deferred")], "deferred"),
        ([ev("sent")], "sent"),
        ([ev("delivered")], "delivered"),
        ([SOFT], "bounced"),
        ([HARD], "bounced"),
        ([FAILED], "failed"),
        # sent beats deferred beats queued
        ([ev("queued"), ev("deferred")], "deferred"),
        ([ev("queued"), ev("sent")], "sent"),
        ([ev("queued"), ev("deferred"), ev("sent")], "sent"),
        ([ev("sent"), ev("deferred")], "sent"),
        ([ev("sent"), ev("queued")], "sent"),
        # delivered beats soft bounce, whatever the order
        ([ev("sent"), SOFT, ev("delivered")], "delivered"),
        ([ev("delivered"), SOFT], "delivered"),
        # a soft bounce beats the in-flight states
        ([ev("queued"), ev("sent"), SOFT], "bounced"),
        ([ev("deferred"), SOFT], "bounced"),
        # hard bounce and failure beat delivered
        ([ev("sent"), ev("delivered"), HARD], "bounced"),
        ([HARD, ev("delivered")], "bounced"),
        ([ev("delivered"), FAILED], "failed"),
        ([FAILED, ev("delivered")], "failed"),
        # failure beats a hard bounce
        ([HARD, FAILED], "failed"),
        ([FAILED, HARD], "failed"),
        # a bounce without a bounceType is treated as hard
        ([ev("delivered"), ("bounced", {})], "bounced"),
        # non-message types contribute nothing
        ([ev("callback.failing")], None),
        ([ev("queued"), ev("callback.disabled")], "queued"),
    ],
)
def test_message_status_precedence(events: list[tuple[str, dict[str, Any]]], expected: str | None) -> None:
    assert message_status(events) == expected


@pytest.mark.parametrize("engagement", ENGAGEMENT_TYPES)
def test_engagement_implies_delivered(engagement: str) -> None:
    assert message_status([ev(engagement)]) == "delivered"
    assert message_status([ev("queued"), ev("sent"), ev(engagement)]) == "delivered"
    assert message_status([ev("deferred"), ev(engagement)]) == "delivered"


@pytest.mark.parametrize("engagement", ENGAGEMENT_TYPES)
@pytest.mark.parametrize(("outcome", "expected"), [(HARD, "bounced"), (FAILED, "failed")])
def test_engagement_never_overrides_a_hard_bounce_or_failure(
    engagement: str, outcome: tuple[str, dict[str, Any]], expected: str
) -> None:
    assert message_status([outcome, ev(engagement)]) == expected
    assert message_status([ev(engagement), outcome]) == expected


@pytest.mark.parametrize("engagement", ENGAGEMENT_TYPES)
def test_engagement_after_a_soft_bounce_means_delivered(engagement: str) -> None:
    # a soft bounce is transient; engagement implies delivered, and delivered beats a soft bounce
    assert message_status([SOFT, ev(engagement)]) == "delivered"


def test_engagement_is_reported_as_delivered_not_as_its_own_type() -> None:
    assert message_status([ev("delivered"), ev("opened"), ev("clicked")]) == "delivered"


def test_message_status_does_not_depend_on_event_order() -> None:
    events = [ev("queued"), ev("sent"), SOFT, ev("delivered"), ev("opened")]
    assert {message_status(list(p)) for p in permutations(events)} == {"delivered"}
    events = [ev("queued"), ev("sent"), ev("delivered"), ev("clicked"), HARD]
    assert {message_status(list(p)) for p in permutations(events)} == {"bounced"}


# --- cursors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("last_id", [0, 1, 42, 10**6, 2**31 - 1, 10**18 - 1])
def test_cursor_round_trips(last_id: int) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


def test_cursor_is_url_safe_and_unpadded() -> None:
    for last_id in range(0, 2000, 7):
        cursor = encode_cursor(last_id)
        assert "=" not in cursor
        assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("cursor", [None, ""])
def test_missing_cursor_starts_from_the_beginning(cursor: str | None) -> None:
    assert decode_cursor(cursor) == 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "%%%",
        "é",
        "a",  # impossible base64 length
        _b64(b"x:12"),  # wrong kind
        _b64(b"12"),  # no kind
        _b64(b"e:"),  # no number
        _b64(b"e:twelve"),
        _b64(b"e:1.5"),
        _b64(b"\xff\xfe\xfd"),  # not UTF-8
        "-1",
        "1" * 19,  # beyond any id
        "12\n",
    ],
)
def test_garbage_cursor_is_an_invalid_request_on_field_cursor(cursor: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_cursor(cursor)
    assert info.value.field == "cursor"
    assert info.value.status == 400
