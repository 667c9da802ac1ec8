"""``filter_sql`` -> WHERE: the spec's vectors (2.5) where they still make sense, and the injections they allowed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rosetta_jobs.errors import PreviewError
from rosetta_jobs.preview.filters import build_filter, quote_identifier, quote_literal, where_clause
from rosetta_jobs.preview.parsing import iter_nodes, parse
from rosetta_jobs.preview.query import build_statement
from rosetta_jobs.preview.request import PreviewRequest


def v2(*groups: dict[str, Any], inter: list[Any] | None = None) -> str:
    spec: dict[str, Any] = {"version": 2, "groups": list(groups)}
    if inter is not None:
        spec["interLogic"] = inter
    return json.dumps(spec)


def group(*conditions: dict[str, Any], logic: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"conditions": list(conditions)}
    if logic is not None:
        out["intraLogic"] = logic
    return out


def cond(column: Any, operator: Any, value: Any = None, value2: Any = None) -> dict[str, Any]:
    return {"column": column, "operator": operator, "value": value, "value2": value2}


def assert_one_condition(where: str) -> None:
    """The clause parses as exactly one WHERE condition of a plain SELECT."""
    tree = parse(f"SELECT * FROM t{where}")
    assert len(tree["statements"]) == 1
    assert tree["statements"][0]["node"]["where_clause"] is not None


@pytest.mark.parametrize("filter_sql", [None, "", "   "])
def test_no_filter_gives_no_where(filter_sql: str | None) -> None:
    # Given no filter
    # When it is translated
    result = where_clause(filter_sql)
    # Then there is no WHERE at all
    assert result == ""


def test_spec_vector_groups_joined_with_inter_logic() -> None:
    # Given group1 OR(amount>10, amount<-2.5), group2 name like 'ab', interLogic ["OR"]
    filter_sql = v2(
        group(cond("amount", ">", "10"), cond("amount", "<", "-2.5"), logic="OR"),
        group(cond("name", "like", "ab")),
        inter=["OR"],
    )
    # When it is translated
    result = where_clause(filter_sql)
    # Then it is the spec's clause with quoted identifiers, LIKE wrapped in %...%
    assert result == ' WHERE ("amount" > 10 OR "amount" < -2.5) OR "name" LIKE \'%ab%\''
    assert_one_condition(result)


def test_spec_vector_ilike_is_null_between_in() -> None:
    # Given ILIKE with a wildcard, IS NULL, BETWEEN dates and IN with numbers, words and a quote
    filter_sql = v2(
        group(
            cond("name", "ILIKE", "ab%"),
            cond("x", "IS NULL"),
            cond("d", "BETWEEN", "2024-01-01", "2024-12-31"),
            cond("id", "IN", "1, 2,abc, O'Neil"),
        )
    )
    # When it is translated
    result = where_clause(filter_sql)
    # Then the pattern is kept, numbers stay bare and the quote is doubled
    assert result == (
        """ WHERE ("name" ILIKE 'ab%' AND "x" IS NULL AND "d" BETWEEN '2024-01-01' AND '2024-12-31'"""
        """ AND "id" IN (1, 2, 'abc', 'O''Neil'))"""
    )
    assert_one_condition(result)


def test_spec_vector_bad_column_and_empty_value_dropped() -> None:
    # Given a column that is not a name, an empty value and a quoted dotted column
    filter_sql = v2(group(cond("1bad", "=", "x"), cond("name", "=", ""), cond('t."Col"', "!=", "x")))
    # When it is translated
    result = where_clause(filter_sql)
    # Then only the last condition is left, each part of its name quoted
    assert result == ' WHERE "t"."Col" != \'x\''


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("=", 5, '"c" = 5'),
        ("=", 2.5, '"c" = 2.5'),
        ("=", True, "\"c\" = 'true'"),
        ("<>", "007", '"c" <> 007'),
        ("not like", "a_c", "\"c\" NOT LIKE 'a_c'"),
        ("NOT  ILIKE", "x", "\"c\" NOT ILIKE '%x%'"),
        ("not in", [1, "b"], "\"c\" NOT IN (1, 'b')"),
        ("between", 1, None),
        ("is not null", None, '"c" IS NOT NULL'),
        (">=", "x' OR '1'='1", "\"c\" >= 'x'' OR ''1''=''1'"),
    ],
    ids=["int", "float", "bool", "numeric-text", "not-like", "not-ilike-spaces", "not-in-list", "between-no-value2",
         "is-not-null", "quote-in-value"],
)  # fmt: skip
def test_operators_and_values(operator: str, value: Any, expected: str | None) -> None:
    # Given one condition on column c
    filter_sql = v2(group(cond("c", operator, value)))
    if expected is None:
        # When BETWEEN has no upper bound
        with pytest.raises(PreviewError) as info:
            where_clause(filter_sql)
        # Then the message names what is missing
        assert "BETWEEN needs both 'value' and 'value2'" in str(info.value)
        return
    # When it is translated
    result = where_clause(filter_sql)
    # Then values are literals (numbers bare, text quoted), never SQL
    assert result == f" WHERE {expected}"
    assert_one_condition(result)


def test_in_splits_on_commas_inside_text_but_never_leaves_the_literal() -> None:
    # Given an IN value that tries to close the list
    filter_sql = v2(group(cond("c", "IN", "1) OR (1=1")))
    # When it is translated
    result = where_clause(filter_sql)
    # Then each comma-separated item is a literal: the parenthesis is inside a string
    assert result == " WHERE \"c\" IN ('1) OR (1=1')"


@pytest.mark.parametrize(
    "operator",
    ["= 1 OR 1=1; SELECT 1 --", "=1--", "LIKE '%' OR 1=1 OR", "~", "IS", "", None, 5, "=="],
)
def test_unknown_operator_is_refused(operator: Any) -> None:
    # Given an operator that is not on the list (the spec's injection among them)
    filter_sql = v2(group(cond("id", operator, "1")))
    # When it is translated
    with pytest.raises(PreviewError) as info:
        where_clause(filter_sql)
    # Then the error names the operator and lists the allowed ones
    assert f"Unknown filter operator {operator!r}" in str(info.value)
    assert "=, !=, <>, <, <=, >, >=, LIKE, ILIKE, NOT LIKE, NOT ILIKE, IN, NOT IN, BETWEEN" in str(info.value)


@pytest.mark.parametrize("logic", ["OR 1=1 OR", "AND/**/", "XOR", 1])
def test_unknown_intra_logic_is_refused(logic: Any) -> None:
    # Given a logic word that is not AND or OR
    filter_sql = v2(group(cond("a", "=", "1"), cond("b", "=", "2"), logic=logic))
    # When it is translated
    with pytest.raises(PreviewError) as info:
        where_clause(filter_sql)
    # Then the error names it and lists AND, OR
    assert str(info.value) == f"Unknown filter logic {logic!r}: use one of AND, OR."


def test_unknown_inter_logic_is_refused() -> None:
    # Given an interLogic entry carrying SQL
    filter_sql = v2(group(cond("a", "=", "1")), group(cond("b", "=", "2")), inter=["OR 1=1) UNION SELECT 1 --"])
    # When it is translated
    with pytest.raises(PreviewError) as info:
        where_clause(filter_sql)
    # Then it is refused
    assert "Unknown filter logic" in str(info.value)


def test_logic_words_are_case_insensitive_and_default_to_and() -> None:
    # Given lower-case logic words and a group without one
    filter_sql = v2(
        group(cond("a", "=", "1"), cond("b", "=", "2"), logic=" or "),
        group(cond("c", "=", "3"), cond("d", "=", "4")),
        inter=["and"],
    )
    # When it is translated
    result = where_clause(filter_sql)
    # Then they are upper-cased, and the second group is joined with AND
    assert result == ' WHERE ("a" = 1 OR "b" = 2) AND ("c" = 3 AND "d" = 4)'


@pytest.mark.parametrize(
    "column",
    ['id"; DROP TABLE orders; --', "id; DROP TABLE x", "a b", "a.", ".a", 'a"b', "", 7, None],
)
def test_column_that_is_not_a_name_drops_the_condition(column: Any) -> None:
    # Given a column that is not dotted names
    filter_sql = v2(group(cond(column, "=", "1"), cond("ok", "=", "2")))
    # When it is translated
    result = where_clause(filter_sql)
    # Then that condition is dropped (spec 2.5) and nothing of it reaches SQL
    assert result == ' WHERE "ok" = 2'


def test_quoted_column_parts_keep_any_character() -> None:
    # Given quoted parts with a space, a dot and an escaped quote
    filter_sql = v2(group(cond('"my table"."a.b ""c"""', "=", "x")))
    # When it is translated
    result = where_clause(filter_sql)
    # Then they stay single identifiers
    assert result == ' WHERE "my table"."a.b ""c""" = \'x\''
    assert_one_condition(result)


def test_empty_groups_are_skipped_with_their_logic() -> None:
    # Given an empty first group
    filter_sql = v2(group(cond("a", "=", "")), group(cond("b", "=", "1")), inter=["OR"])
    # When it is translated
    result = where_clause(filter_sql)
    # Then no dangling logic word is left
    assert result == ' WHERE "b" = 1'


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"version": 2, "groups": "x"}, "'groups' must be a list"),
        ({"version": 2, "groups": [1]}, "each group must be an object"),
        ({"version": 2, "groups": [{"conditions": ["x"]}]}, "each condition must be an object"),
        ({"version": 1, "groups": []}, "Unsupported filter version 1"),
    ],
)
def test_malformed_v2_is_an_error(payload: dict[str, Any], message: str) -> None:
    # Given a JSON filter of the wrong shape
    # When it is translated
    with pytest.raises(PreviewError) as info:
        where_clause(json.dumps(payload))
    # Then the message says what is wrong
    assert message in str(info.value)


def test_legacy_spec_vector_each_part_parenthesised() -> None:
    # Given the spec's legacy filter
    # When it is translated
    result = where_clause("status = 'A'; amount > 10")
    # Then the parts are parenthesised and joined with AND
    assert result == " WHERE (status = 'A') AND (amount > 10)"


def test_legacy_part_with_comment_cannot_swallow_the_rest() -> None:
    # Given a legacy part ending in a line comment
    # When it is translated
    result = where_clause("status = 'A' -- only A\n; amount > 1")
    # Then the comment ends before the closing parenthesis
    assert result == " WHERE (status = 'A' -- only A\n) AND (amount > 1)"
    assert_one_condition(result)


@pytest.mark.parametrize(
    ("filter_sql", "parts"),
    [
        ("name = 'a;b'; amount > 1", ("name = 'a;b'", "amount > 1")),
        ('"odd;name" = 1;id = 2', ('"odd;name" = 1', "id = 2")),
        ("name = $$x;y$$ ; id = 2", ("name = $$x;y$$", "id = 2")),
        ("id = 1 /* a; /* b; */ c; */ ; id < 5", ("id = 1 /* a; /* b; */ c; */", "id < 5")),
        ("status = 'A' -- no split; here", ("status = 'A' -- no split; here",)),
    ],
    ids=["string", "quoted-name", "dollar-string", "nested-comment", "line-comment"],
)
def test_legacy_filter_is_split_on_semicolon_tokens(filter_sql: str, parts: tuple[str, ...]) -> None:
    # Given a legacy filter with ';' inside strings, names or comments
    # When it is translated
    result = build_filter(filter_sql)
    # Then only the ';' tokens split it: a literal keeps its ';'
    assert result.sql_parts == parts
    assert_one_condition(result.where)


@pytest.mark.parametrize(
    ("filter_sql", "message"),
    [
        ("1=1; DROP TABLE orders", "SQL contains forbidden keyword: DROP."),
        ("id IN (SELECT id FROM x) OR 1=1; DELETE FROM orders", "SQL contains forbidden keyword: DELETE."),
        ("1=1) UNION SELECT * FROM read_csv('/etc/passwd') --", "SQL contains forbidden function: read_csv."),
        ("name = (SELECT content FROM READ_TEXT('/app/.env'))", "SQL contains forbidden function: READ_TEXT."),
    ],
)
def test_legacy_injection_gets_the_token_checks(filter_sql: str, message: str) -> None:
    # Given legacy filters carrying statements or file reads
    preview = PreviewRequest(sql=None, source_id=1, destination_id=2, table_name="orders", filter_sql=filter_sql)
    # When their statement is built
    with pytest.raises(PreviewError) as info:
        build_statement(preview, source_alias="pg_src_main")
    # Then the old validator's message comes back, from its check of the parts as written (before the rest)
    assert str(info.value).startswith(message)
    assert build_filter(filter_sql).sql_parts == tuple(p.strip() for p in filter_sql.split(";"))


def test_v2_filter_has_no_parts_written_as_sql() -> None:
    # Given a v2 filter whose value looks like SQL
    # When it is translated
    result = build_filter(v2(group(cond("c", "=", "1; DROP TABLE orders"))))
    # Then nothing of it is handed to the token checks: it is one quoted literal
    assert result.sql_parts == ()
    assert result.where == " WHERE \"c\" = '1; DROP TABLE orders'"


@pytest.mark.parametrize("operator", ["IN", "NOT IN", "not in"])
@pytest.mark.parametrize("value", ["", [], None], ids=["empty-text", "empty-list", "null"])
def test_in_with_an_empty_value_drops_the_condition(operator: str, value: Any) -> None:
    # Given IN or NOT IN with no value at all, beside a condition that stays
    filter_sql = v2(group(cond("c", operator, value), cond("ok", "=", "2")))
    # When it is translated
    result = where_clause(filter_sql)
    # Then that condition is dropped, like an empty value of any other operator (spec 2.5)
    assert result == ' WHERE "ok" = 2'


@pytest.mark.parametrize("operator", ["IN", "NOT IN"])
@pytest.mark.parametrize("value", ["", [], None], ids=["empty-text", "empty-list", "null"])
def test_in_with_an_empty_value_alone_gives_no_where(operator: str, value: Any) -> None:
    # Given a preview (with and without custom SQL) whose only filter is an empty IN / NOT IN
    filter_sql = v2(group(cond("status", operator, value)))
    for sql in (None, "SELECT id FROM orders"):
        preview = PreviewRequest(sql=sql, source_id=1, destination_id=2, table_name="orders", filter_sql=filter_sql)
        # When the statement is built
        statement = build_statement(preview, source_alias="pg_src_main")
        # Then it has no WHERE at all: every row of the table is previewed
        assert "WHERE" not in statement.upper()
        selects = [node for node, _ in iter_nodes(parse(statement)) if node.get("type") == "SELECT_NODE"]
        assert selects
        assert all(node.get("where_clause") is None for node in selects)


@pytest.mark.parametrize(
    ("value", "expected"),
    [([""], "('')"), (["a", "", 1], "('a', '', 1)"), ("a,,b", "('a', '', 'b')"), (" ", "('')"), ([None], "('')")],
    ids=["list-of-empty", "empty-item-in-list", "empty-item-in-text", "blank", "list-of-null"],
)  # fmt: skip
def test_in_keeps_empty_items_of_a_non_empty_value(value: Any, expected: str) -> None:
    # Given IN with a value that is not empty but holds empty items
    filter_sql = v2(group(cond("c", "IN", value)))
    # When it is translated
    result = where_clause(filter_sql)
    # Then each item is kept as a literal (the comma split of spec 2.5): only a missing list drops the condition
    assert result == f' WHERE "c" IN {expected}'
    assert_one_condition(result)


def test_quote_helpers_double_their_quotes() -> None:
    # Given names and values with quotes
    # When they are quoted
    # Then each is exactly one token
    assert quote_identifier('a"b') == '"a""b"'
    assert quote_literal("it's") == "'it''s'"
    with pytest.raises(PreviewError):
        quote_literal("a\x00b")


def test_a_v2_filter_has_a_shape_with_its_values_replaced_by_their_kind() -> None:
    # Given a v2 filter with a number, a negative decimal, a LIKE pattern, a list and a range
    filter_sql = v2(
        group(cond("id", ">", 42), cond("amount", "<", "-3.5"), cond("name", "LIKE", "O'Neil"), logic="OR"),
        group(cond("status", "IN", ["A", 7]), cond("day", "BETWEEN", "2024-01-01", "2024-12-31")),
    )
    # When it is translated
    result = build_filter(filter_sql)
    # Then the shape is the WHERE with each value a constant of its kind and sign, operators and names kept
    assert result.shape == (
        ' WHERE ("id" > 0 OR "amount" < -0.0 OR "name" LIKE \'\') AND ("status" IN (\'\', 0) AND '
        "\"day\" BETWEEN '' AND '')"
    )
    # And both parse to the same tree but for constant values
    assert_one_condition(result.shape)
    assert _without_constants(parse(f"SELECT * FROM t{result.where}")) == _without_constants(
        parse(f"SELECT * FROM t{result.shape}")
    )


@pytest.mark.parametrize(
    ("value", "kept"),
    [("9" * 19, "9" * 19), ("-" + "1" * 18, "-" + "1" * 18), ("\ud800", "'\ud800'")],
    ids=["past-bigint", "long-negative", "lone-surrogate"],
)
def test_a_value_the_shape_cannot_stand_for_is_kept_in_it(value: str, kept: str) -> None:
    # Given a v2 filter on a number past BIGINT, or a string that is not UTF-8
    # When it is translated
    result = build_filter(v2(group(cond("c", "=", value))))
    # Then the shape keeps that value as written, so the real text is what gets judged
    assert result.shape == f' WHERE "c" = {kept}'


@pytest.mark.parametrize("value", ["\u0661\u0662\u0663", "-\u0663", "\u0661.\u0662", "1\u0661", "\uff11"],
                         ids=["arabic-indic", "negative", "decimal", "mixed", "fullwidth"])  # fmt: skip
def test_digits_other_than_ascii_are_a_quoted_string(value: str) -> None:
    # Given a v2 value of Unicode digits that are not 0-9 (DuckDB reads them unquoted as a name)
    # When it is translated
    result = build_filter(v2(group(cond("id", "=", value))))
    # Then it is a string literal, in the WHERE and in its shape
    assert result.where == f" WHERE \"id\" = '{value}'"
    assert result.shape == " WHERE \"id\" = ''"


@pytest.mark.parametrize(
    "value",
    [0, -7, 2.5, -0.0, 1e400, 10**30, "9" * 19, True, None, {"a": 1}, [1, "x"], "x' OR 1=1 --", "a;b", "$1", "?",
     "/* c */", "e'\\'", "%_", " ", "\u2028", "-", "1.", ".5", "--5", "0x1F", "\u0661\u0662", "-\u0663"],
)  # fmt: skip
@pytest.mark.parametrize("operator", ["=", ">", "LIKE", "IN", "BETWEEN"])
def test_a_shape_parses_like_its_filter_but_for_constants(operator: str, value: Any) -> None:
    # Given a v2 condition with any kind of value
    raw = cond("c", operator, value, value)
    # When it is translated
    result = build_filter(v2(group(raw, cond("d", "=", "x"))))
    # Then the shape and the real WHERE parse to one tree, constants aside
    assert _without_constants(parse(f"SELECT * FROM t{result.where}")) == _without_constants(
        parse(f"SELECT * FROM t{result.shape}")
    )


@pytest.mark.parametrize("filter_sql", ["a > 1; b = 'x'", None], ids=["legacy", "none"])
def test_only_a_filter_of_ours_has_a_shape(filter_sql: str | None) -> None:
    # Given a legacy filter (the user's SQL text), or none at all
    # When it is translated
    result = build_filter(filter_sql)
    # Then a legacy filter has no shape (its text must be judged itself), and no filter has the empty one
    assert result.shape == (None if filter_sql else "")


def _without_constants(tree: Any) -> Any:
    if isinstance(tree, dict):
        if tree.get("class") == "CONSTANT":
            return "CONSTANT"
        return {k: _without_constants(v) for k, v in tree.items() if k != "query_location"}
    if isinstance(tree, list):
        return [_without_constants(v) for v in tree]
    return tree
