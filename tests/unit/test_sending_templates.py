"""Liquid rendering of message content."""

from __future__ import annotations

import pytest

from dispatcher.sending.errors import TemplateError, TemplateLimitError
from dispatcher.sending.templates import check_literal_ranges, parse_template, render


def test_attributes_and_recipient_are_available() -> None:
    out = render(
        "{{ attributes.name }} <{{ recipient.to }}> #{{ recipient.contactKey }}",
        {"name": "Ada"},
        contact_key="c-7",
        to="ada@example.com",
    )
    assert out == "Ada <ada@example.com> #c-7"


def test_nested_attributes_loops_and_filters_work() -> None:
    source = "{% for item in attributes.items %}{{ item.sku | upcase }},{% endfor %}{{ attributes.total }}"
    out = render(source, {"items": [{"sku": "a1"}, {"sku": "b2"}], "total": 3}, contact_key=None, to="x")
    assert out == "A1,B2,3"


def test_html_rendering_escapes_attribute_values() -> None:
    out = render(
        '<p title="{{ attributes.t }}">{{ attributes.name }}</p>',
        {"name": "<script>alert(1)</script>", "t": '"quoted" & more'},
        contact_key=None,
        to="x",
        html=True,
    )
    assert out == '<p title="&#34;quoted&#34; &amp; more">&lt;script&gt;alert(1)&lt;/script&gt;</p>'


def test_text_rendering_does_not_escape() -> None:
    out = render("{{ attributes.name }} & co", {"name": "<Tom & Jerry>"}, contact_key=None, to="x")
    assert out == "<Tom & Jerry> & co"


def test_undefined_attribute_renders_empty() -> None:
    assert render("Hi {{ attributes.missing }}!", None, contact_key=None, to="x") == "Hi !"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{ name", "expected '}}'"),
        ("{% if %}yes{% endif %}", "missing expression"),
        ("{% for x in xs %}", "endfor"),
        ("{{ x | no_such_filter }}", "unknown filter 'no_such_filter'"),
        ("{% include 'partial' %}", "unexpected tag 'include'"),
        ("{% render 'partial' %}", "unexpected tag 'render'"),
    ],
)
def test_invalid_template_raises_a_readable_template_error(source: str, expected: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(source)
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(TemplateError, match=r"line 3, column 4"):
        parse_template("one\ntwo\nok {{ broken")


def test_runaway_loop_is_stopped_by_the_iteration_limit() -> None:
    with pytest.raises(TemplateError, match="limit"):
        render("{% for i in (1..1000000) %}{% endfor %}", {}, contact_key=None, to="x")


def test_parsed_templates_are_cached_by_source() -> None:
    assert parse_template("{{ attributes.a }}") is parse_template("{{ attributes.a }}")
    assert parse_template("{{ attributes.a }}") is not parse_template("{{ attributes.a }}", html=True)


@pytest.mark.parametrize(
    "source",
    [
        "{{ attributes.s | append: attributes.s }}",
        "{{ attributes.items | join: ',' }}",
        "{{ attributes.big | upcase }}",
    ],
)
def test_filters_refuse_values_over_the_size_limit(source: str) -> None:
    attributes = {"s": "x" * 600, "big": "x" * 1200, "items": list(range(2000))}
    with pytest.raises(TemplateLimitError, match="value size limit"):
        render(source, attributes, contact_key=None, to="x", max_value=1000)
    assert render("{{ attributes.s | size }}", attributes, contact_key=None, to="x", max_value=1000) == "600"


def test_literal_ranges_over_the_limit_are_refused_wherever_they_appear() -> None:
    check_literal_ranges("{% for i in (1..1000) %}{{ i }}{% endfor %}", max_value=1000)
    check_literal_ranges("{% assign r = (1..attributes.n) %}", max_value=1000)
    with pytest.raises(TemplateError, match=r"range \(1\.\.1001\) has more than 1000 items \(line 2\)"):
        check_literal_ranges("ok\n{% if x %}{% assign r = (1..1001) | size %}{% endif %}", max_value=1000)
