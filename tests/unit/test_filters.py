"""Payload filters compile to SQL/JSON path predicates: the shape of each operator's path, values escaped
as JSON literals (never pasted), and every refused filter named down to its operator or path."""

from __future__ import annotations

import json

import pytest

from dispatcher.filters import MAX_DEPTH, MAX_NODES, FilterError, compile_filter

TZ = '.datetime() ? (@.type() == "timestamp with time zone")'


@pytest.mark.parametrize(
    ("filters", "path"),
    [
        ({}, None),
        ({"type": "bounced"}, '$.type == "bounced"'),
        ({"definitionKey": "x"}, '$.definitionKey == "x"'),
        ({"bounceType": "hard"}, '$.data."bounceType" == "hard"'),  # the older form: a field of data
        ({"data.bounceType": "hard"}, '$.data."bounceType" == "hard"'),
        ({"data.order.total": 5}, '$.data."order"."total" == 5'),
        ({"data.ok": True, "type": "sent"}, '($.data."ok" == true && $.type == "sent")'),
        ({"data.n": {"$eq": -2.5}}, '$.data."n" == -2.5'),
        ({"data.n": {"$ne": 1}}, '(!($.data."n" == 1) || ($.data."n" == 1) is unknown)'),
        ({"type": {"$in": ["a", "b"]}}, '($.type == "a" || $.type == "b")'),
        ({"type": {"$nin": ["a"]}}, '(!(($.type == "a")) || (($.type == "a")) is unknown)'),
        ({"recipient": {"$exists": True}}, "exists($.recipient ? (@ != null))"),
        ({"recipient": {"$exists": False}}, "!exists($.recipient ? (@ != null))"),
        ({"data.r": {"$exists": False}}, '!exists($.data."r")'),
        ({"data.n": {"$gt": 1, "$lte": 10}}, '($.data."n" > 1 && $.data."n" <= 10)'),
        ({"data.n": {"$gte": 0, "$lt": 1e-07}}, '($.data."n" >= 0 && $.data."n" < 1e-07)'),
        ({"data.n": {"$not": {"$gt": 5}}}, '(!($.data."n" > 5) || ($.data."n" > 5) is unknown)'),
        ({"$or": [{"type": "a"}, {"type": "b"}]}, '($.type == "a" || $.type == "b")'),
        ({"$and": [{"type": "a"}, {"data.x": 1}]}, '($.type == "a" && $.data."x" == 1)'),
        ({"$not": {"type": "a"}}, '(!($.type == "a") || ($.type == "a") is unknown)'),
        ({"data": {"$exists": True}}, "exists($.data)"),
    ],
)
def test_each_operator_compiles_to_its_path(filters, path):
    assert compile_filter(filters) == path


def test_a_time_compares_as_a_time_whatever_its_offset_and_times_ending_in_z_parse_on_every_postgresql():
    path = compile_filter({"occurredAt": {"$gte": "2030-01-01T10:00:00+01:00"}})
    assert path == (
        f'($.occurredAt{TZ} >= "2030-01-01T09:00:00.000000+00:00".datetime()'
        ' || $.occurredAt.datetime("YYYY-MM-DD\\"T\\"HH24:MI:SS\\"Z\\"") >= "2030-01-01T09:00:00.000000".datetime()'
        ' || $.occurredAt.datetime("YYYY-MM-DD\\"T\\"HH24:MI:SS.US\\"Z\\"") >= "2030-01-01T09:00:00.000000".datetime())'
    )


@pytest.mark.parametrize(
    "text",
    ['say "hi"', "back\\slash", "tab\tnew\nline", "é ü 中文", "emoji 😀", "\u2028\u2029", "\x01\x1f", "a$x == 1 || true",
     '") || true || ("', "\\u0041"],
)  # fmt: skip
def test_strings_are_json_escaped_literals_with_every_special_character_encoded(text):
    path = compile_filter({"data.k": text, text: 1})
    assert path is not None
    literal = json.dumps(text, ensure_ascii=True)
    assert path == f'($.data."k" == {literal} && $.data.{literal} == 1)'
    assert path.isascii() and "\n" not in path
    # The literal between the path's quotes decodes to exactly the text: nothing leaks out of it.
    assert json.loads(literal) == text


@pytest.mark.parametrize(
    ("filters", "field", "code"),
    [
        ({"$or": [{"type": "a"}, {"data.total": {"$gtt": 1}}]}, "filters.$or[1].data.total.$gtt", "invalid_choice"),
        ({"$nor": [{"type": "a"}]}, "filters.$nor", "invalid_choice"),
        ({"$or": []}, "filters.$or", "too_short"),
        ({"$or": {"type": "a"}}, "filters.$or", "invalid_type"),
        ({"$and": [{"type": "a"}, 3]}, "filters.$and[1]", "invalid_type"),
        ({"$not": {}}, "filters.$not", "too_short"),
        ({"type": {"$in": "a"}}, "filters.type.$in", "invalid_type"),
        ({"type": {"$in": ["a", ["b"]]}}, "filters.type.$in[1]", "invalid_type"),
        ({"type": {"$in": [None]}}, "filters.type.$in[0]", "invalid_type"),
        ({"type": {"$in": list(range(101))}}, "filters.type.$in", "too_long"),
        ({"type": {"$exists": 1}}, "filters.type.$exists", "invalid_type"),
        ({"data.n": {"$gt": "soon"}}, "filters.data.n.$gt", "invalid_value"),
        ({"data.n": {"$gt": "2030-01-01T09:00:00"}}, "filters.data.n.$gt", "invalid_value"),  # no offset
        ({"data.n": {"$gt": "2030-02-30T09:00:00Z"}}, "filters.data.n.$gt", "invalid_value"),
        ({"data.n": {"$lt": True}}, "filters.data.n.$lt", "invalid_type"),
        ({"data.n": {"$lt": float("inf")}}, "filters.data.n.$lt", "invalid_value"),
        ({"data.n": {}}, "filters.data.n", "too_short"),
        ({"data.n": {"$not": 5}}, "filters.data.n.$not", "invalid_type"),
        ({"data.n": [1, 2]}, "filters.data.n", "invalid_type"),
        ({"data.n": None}, "filters.data.n", "invalid_type"),
        ({"data.n": "x" * 201}, "filters.data.n", "too_long"),
        ({"data.n": "a\x00b"}, "filters.data.n", "invalid_character"),
        ({"order.total": 5}, "filters.order.total", "invalid_value"),  # a dotted path starts with data.
        ({"data..x": 5}, "filters.data..x", "invalid_value"),
        ({"data." + ".".join("abcdefghijk"): 1}, "filters.data.a.b.c.d.e.f.g.h.i.j.k", "too_deep"),
        ({"": 1}, "filters.", "invalid_value"),
    ],
)
def test_a_refused_filter_names_its_operator_or_path(filters, field, code):
    with pytest.raises(FilterError) as refused:
        compile_filter(filters)
    assert (refused.value.field, refused.value.code, refused.value.status) == (field, code, 400)


def test_nesting_and_size_are_bounded():
    deep: dict = {"type": "a"}
    for _ in range(MAX_DEPTH + 1):
        deep = {"$not": deep}
    with pytest.raises(FilterError) as refused:
        compile_filter(deep)
    assert refused.value.code == "too_deep" and refused.value.field == "filters" + ".$not" * (MAX_DEPTH + 1)

    wide = {"$or": [{f"data.k{i}": {"$in": [1, 2]}} for i in range(MAX_NODES)]}
    with pytest.raises(FilterError) as refused:
        compile_filter(wide)
    assert refused.value.code == "too_long"
