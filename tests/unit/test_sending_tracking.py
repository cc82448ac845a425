"""Signed tracking tokens and HTML link rewriting."""

from __future__ import annotations

import base64
import re

import pytest

from dispatcher.sending.tracking import TrackingClaim, make_token, read_token, rewrite_html

SECRET = b"s3cret-tracking-key"
PUBLIC = "https://mail.example.com"


def fake_click_token(url: str) -> str:
    return f"TOKEN[{url}]"


def rewrite(html: str, open_token: str | None = None) -> str:
    return rewrite_html(html, PUBLIC, fake_click_token, open_token=open_token)


# --- tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "url"),
    [("o", None), ("u", None), ("c", "https://shop.example.com/p?id=1&x=ü|pipe#frag")],
)
def test_token_round_trips_its_claim(kind: str, url: str | None) -> None:
    token = make_token(SECRET, kind, 12, 34567, url)  # type: ignore[arg-type]
    assert read_token(SECRET, kind, token) == TrackingClaim(kind, 12, 34567, url)  # type: ignore[arg-type]


def test_token_is_url_safe() -> None:
    token = make_token(SECRET, "c", 1, 2, "https://example.com/?q=" + "x" * 200)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)


def test_token_of_another_kind_is_rejected() -> None:
    assert read_token(SECRET, "u", make_token(SECRET, "o", 1, 2)) is None


def test_token_signed_with_another_secret_is_rejected() -> None:
    assert read_token(SECRET, "o", make_token(b"other", "o", 1, 2)) is None


def test_tampered_click_destination_is_rejected() -> None:
    """Otherwise the click route would be an open redirect to any URL."""
    token = make_token(SECRET, "c", 1, 2, "https://good.example.com")
    payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b"c|1|2|https://evil.example.com").rstrip(b"=").decode()
    assert payload != forged
    assert read_token(SECRET, "c", f"{forged}.{mac}") is None


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.def", "not base64!.x", "é.é", "a" * 10_000, "b3wxfDI.", "..."],
)
def test_malformed_token_is_rejected_without_raising(token: str) -> None:
    assert read_token(SECRET, "o", token) is None


def test_token_with_flipped_mac_byte_is_rejected() -> None:
    token = make_token(SECRET, "o", 1, 2)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert read_token(SECRET, "o", flipped) is None


def test_click_token_requires_a_url_and_others_refuse_one() -> None:
    with pytest.raises(ValueError):
        make_token(SECRET, "c", 1, 2, None)
    with pytest.raises(ValueError):
        make_token(SECRET, "o", 1, 2, "https://example.com")
    with pytest.raises(ValueError):
        make_token(b"", "o", 1, 2)


# --- rewriting -------------------------------------------------------------------------


def test_http_and_https_links_are_routed_through_the_click_endpoint() -> None:
    out = rewrite('<a href="https://a.example.com/x">A</a> <a href="http://b.example.com">B</a>')
    assert out == (
        f'<a href="{PUBLIC}/t/c/TOKEN[https://a.example.com/x]">A</a> '
        f'<a href="{PUBLIC}/t/c/TOKEN[http://b.example.com]">B</a>'
    )


@pytest.mark.parametrize(
    ("html", "url"),
    [
        ("<a href='https://single.example.com'>x</a>", "https://single.example.com"),
        ('<A HREF="https://upper.example.com">x</A>', "https://upper.example.com"),
        ('<a class="btn" id=x title="go > there" href="https://after.example.com">x</a>', "https://after.example.com"),
        ("<a\n  href = https://unquoted.example.com/p>x</a>", "https://unquoted.example.com/p"),
        ('<a href="HTTPS://Caps.example.com">x</a>', "HTTPS://Caps.example.com"),
        ('<a href="https://e.example.com/?a=1&amp;b=2">x</a>', "https://e.example.com/?a=1&b=2"),
    ],
)
def test_tricky_anchor_markup_is_rewritten(html: str, url: str) -> None:
    out = rewrite(html)
    # The token sees the real URL; the new href is quoted and HTML-escaped.
    escaped = url.replace("&", "&amp;")
    assert re.search(rf'href\s*=\s*"{re.escape(f"{PUBLIC}/t/c/TOKEN[{escaped}]")}"', out, re.IGNORECASE)
    assert out.count("TOKEN[") == 1


@pytest.mark.parametrize(
    "html",
    [
        '<a href="mailto:help@example.com">mail</a>',
        '<a href="#section">anchor</a>',
        '<a href="tel:+123">call</a>',
        '<a href="/relative">rel</a>',
        f'<a href="{PUBLIC}/t/u/unsubscribe-token">unsubscribe</a>',
        '<a data-notrack href="https://keep.example.com">keep</a>',
        '<a name="top">no href</a>',
        '<abbr href="https://not-an-anchor.example.com">abbr</abbr>',
        '<!-- <a href="https://commented.example.com">c</a> -->',
        "<script>var s = '<a href=\"https://script.example.com\">';</script>",
    ],
)
def test_links_that_must_not_be_tracked_are_left_alone(html: str) -> None:
    assert rewrite(html) == html


def test_data_href_attribute_is_not_mistaken_for_href() -> None:
    html = '<a data-href="https://data.example.com" href="https://real.example.com">x</a>'
    assert rewrite(html) == (
        f'<a data-href="https://data.example.com" href="{PUBLIC}/t/c/TOKEN[https://real.example.com]">x</a>'
    )


def test_href_text_inside_another_attribute_value_is_ignored() -> None:
    html = '<a title="href=https://fake.example.com" href="https://real.example.com">x</a>'
    assert "TOKEN[https://real.example.com]" in rewrite(html)
    assert "TOKEN[https://fake" not in rewrite(html)


def test_open_pixel_is_added_before_the_closing_body_tag() -> None:
    out = rewrite("<html><BODY><p>Hi</p></BODY></html>", open_token="OPEN")
    assert re.fullmatch(
        rf'<html><BODY><p>Hi</p><img src="{PUBLIC}/t/o/OPEN" width="1" height="1"[^>]*/></BODY></html>', out
    )


def test_open_pixel_is_appended_when_there_is_no_body_tag() -> None:
    out = rewrite("<p>fragment</p>", open_token="OPEN")
    assert out.startswith("<p>fragment</p><img ")
    assert out.endswith("/>")


def test_no_open_pixel_without_an_open_token() -> None:
    assert "<img" not in rewrite("<body>x</body>")


def test_hostile_markup_is_rewritten_in_linear_time() -> None:
    """Unclosed tags and comments must not make the scanner quadratic."""
    for html in ("<a " * 100_000, "<!--" * 100_000, '<a "' * 100_000, "<script>" * 100_000):
        assert rewrite(html) == html


def test_rewrite_with_real_tokens_produces_readable_click_claims() -> None:
    out = rewrite_html(
        '<a href="https://shop.example.com/o/1">o</a>',
        PUBLIC,
        lambda url: make_token(SECRET, "c", 5, 6, url),
    )
    token = re.search(r"/t/c/([^\"]+)", out)
    assert token is not None
    assert read_token(SECRET, "c", token.group(1)) == TrackingClaim("c", 5, 6, "https://shop.example.com/o/1")
