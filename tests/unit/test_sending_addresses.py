"""Address syntax: what parse_mailbox accepts, and that its fast path changes none of it."""

from __future__ import annotations

import pytest

from dispatcher.sending.addresses import _split_mailbox, _split_plain_mailbox, normalize_address, parse_mailbox

ACCEPTED = [
    ("a@x.com", ("", "a@x.com")),
    ("Name <a@x.com>", ("Name", "a@x.com")),
    ("Name<a@x.com>", ("Name", "a@x.com")),
    ("  Name   Two  <a@x.com>  ", ("Name Two", "a@x.com")),
    ("Tab\tName <a@x.com>", ("Tab Name", "a@x.com")),
    ('"Quoted, Name" <a@x.com>', ("Quoted, Name", "a@x.com")),
    ("<a@x.com>", ("", "a@x.com")),
    ("Ünïcode Name <a@x.com>", ("Ünïcode Name", "a@x.com")),
    ("Emoji 😀 <a@x.com>", ("Emoji 😀", "a@x.com")),
    ("N\xa0ame <a@x.com>", ("N\xa0ame", "a@x.com")),
    ("O'Neil <o'neil@x.com>", ("O'Neil", "o'neil@x.com")),
    ("Name <A@X.COM>", ("Name", "A@x.com")),
    ("a@bücher.de", ("", "a@xn--bcher-kva.de")),
    ("Bücher <a@bücher.de>", ("Bücher", "a@xn--bcher-kva.de")),
    ("a@x.com (c)", ("", "a@x.com")),
    ("Name (c) <a@x.com>", ("Name", "a@x.com")),
    ("=?utf-8?q?Zo=C3=AB?= <a@x.com>", ("Zoë", "a@x.com")),
]

REFUSED = [
    "",
    "not an address",
    "a@x.com, b@y.com",
    "Name <a@x.com>, c@d.com",
    "A <a@x.com>, B <b@y.com>",
    "Name <a@x.com",
    "a@x.com>",
    "Name <<a@x.com>>",
    "A <b> <a@x.com>",
    "g: a@x.com;",
    "g: Name <a@x.com>;",
    "J. Smith <a@x.com>",
    "Name: <a@x.com>",
    "Name <>",
    "a..b@x.com",
    ".a@x.com",
    "a@x.com.",
    "zoë@x.com",
    "=?utf-8?q?abc?=@x.com",
    "Name\x7f <a@x.com>",
    "Name\x00 <a@x.com>",
    "\udcff <a@x.com>",
    "x@y",
    "Name <a@[1.2.3.4]>",
    "a@x.com\r\nBcc: b@y.com",
    "Name <a@x.com>\n",
    # The stdlib parser raises IndexError, AttributeError, TypeError on these.
    "a@",
    '"',
    ":.< \\:",
    " .]?",
    " \\@[ ",
]


def full_parse(value: str) -> tuple[str, str]:
    """parse_mailbox without its fast path."""
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    name, addr_spec = _split_mailbox(value)
    return name, normalize_address(addr_spec)


@pytest.mark.parametrize(("value", "expected"), ACCEPTED)
def test_single_mailbox_is_split_into_name_and_normalized_address(value: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(value) == expected


@pytest.mark.parametrize("value", REFUSED)
def test_anything_but_a_single_valid_mailbox_is_refused_with_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        parse_mailbox(value)


@pytest.mark.parametrize("value", [value for value, _ in ACCEPTED] + REFUSED)
def test_fast_path_agrees_with_the_full_parser(value: str) -> None:
    """The fast path answers only where the RFC 5322 parser gives the same answer."""
    fast = _split_plain_mailbox(value)
    if fast is not None:
        assert fast == _split_mailbox(value)
    try:
        expected: object = full_parse(value)
    except ValueError:
        expected = ValueError
    try:
        actual: object = parse_mailbox(value)
    except ValueError:
        actual = ValueError
    assert actual == expected


@pytest.mark.parametrize(
    "value", ["a@x.com", "first.last+tag@sub.example.com", "Name <a@x.com>", "Ünïcode Name <a@x.com>", "Shop<a@x.com>"]
)
def test_common_shapes_take_the_fast_path(value: str) -> None:
    assert _split_plain_mailbox(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        '"Quoted" <a@x.com>',
        "J. Smith <a@x.com>",
        "a=b <a@x.com>",
        "Name <a=b@x.com>",
        "a@bücher.de",
        "<a@x.com>",
        "Tab\tName <a@x.com>",
        "N\xa0ame <a@x.com>",
    ],
)
def test_specials_and_unusual_whitespace_go_to_the_full_parser(value: str) -> None:
    assert _split_plain_mailbox(value) is None
