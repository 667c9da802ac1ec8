"""``filter_sql`` to a WHERE clause (spec 2.5, 12.8), with nothing of the user's text reaching SQL unquoted.

v2 JSON is translated with whitelisted operators and logic words, double-quoted identifiers and
single-quoted literals. The legacy form is SQL text by definition: it is split on its ``;`` tokens (not
characters: a ``;`` in a string stays) and parenthesised here, and handed back as ``Filter.sql_parts`` so
that ``build_statement`` holds each part to the sandbox (this module only translates; it never imports
the sandbox).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rosetta_jobs.errors import PreviewError

from .parsing import split_text

__all__ = ["LOGIC_WORDS", "OPERATORS", "Filter", "build_filter", "quote_identifier", "quote_literal", "where_clause"]

OPERATORS = (
    "=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE",
    "IN", "NOT IN", "BETWEEN", "IS NULL", "IS NOT NULL",
)  # fmt: skip
LOGIC_WORDS = ("AND", "OR")
_LIKE = ("LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE")
_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # ASCII digits only: DuckDB reads "١٢٣" as a name
#: The longest number a v2 filter's shape writes as ``0``: 18 digits fit a BIGINT and a DECIMAL(18).
_PLAIN_NUMBER = 18
_COLUMN_PART = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")+"')


def quote_identifier(name: str) -> str:
    """``"name"`` with ``"`` doubled: any text becomes exactly one identifier."""
    if "\x00" in name:
        raise PreviewError("Names may not contain NUL characters.")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``'value'`` with ``'`` doubled (DuckDB strings know no backslash escapes)."""
    if "\x00" in value:
        raise PreviewError("Filter values may not contain NUL characters.")
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Filter:
    """A translated ``filter_sql``: the WHERE clause, and which of its parts are the user's own SQL text."""

    where: str = ""
    #: Legacy parts as written: the sandbox's token checks must pass each one (v2 filters have none).
    sql_parts: tuple[str, ...] = ()
    #: ``where`` with each literal of a v2 filter replaced by a constant of its kind (``0``, ``-0.0``, ``''``):
    #: every filter of one shape parses to the same tree but for constant values, which the sandbox never
    #: judges, so one verdict serves them all. ``None`` for a legacy filter: its text is the user's SQL.
    shape: str | None = None


def build_filter(filter_sql: str | None) -> Filter:
    """The filter for the previewed table: no WHERE at all when nothing is left to filter on."""
    if not filter_sql or not filter_sql.strip():
        return Filter(shape="")
    spec = _v2(filter_sql)
    if spec is None:
        parts = _legacy_parts(filter_sql)
        condition = " AND ".join(f"({part}\n)" if "--" in part else f"({part})" for part in parts)
        return Filter(f" WHERE {condition}" if condition else "", parts)
    condition, shape = _v2_condition(spec, _literal), _v2_condition(spec, _placeholder)
    return Filter(f" WHERE {condition}" if condition else "", shape=f" WHERE {shape}" if shape else "")


def where_clause(filter_sql: str | None) -> str:
    """``""`` or ``" WHERE <condition>"`` for the previewed table."""
    return build_filter(filter_sql).where


def _v2(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("version") != 2:
        raise PreviewError(f"Unsupported filter version {data.get('version')!r}: send a version 2 filter.")
    return data


def _legacy_parts(text: str) -> tuple[str, ...]:
    """Spec 2.5: split on ``;``, stripped, empty parts dropped; a ``;`` inside a string or comment is no split."""
    return tuple(part.strip() for part in split_text(text) if part.strip())


#: How a v2 filter writes a value: as itself (``_literal``) or as a placeholder of its kind (``_placeholder``).
_Render = Callable[[str, bool], str]


def _v2_condition(spec: dict[str, Any], render: _Render) -> str:
    inter = _list(spec.get("interLogic"), "interLogic")
    parts: list[str] = []
    for index, group in enumerate(_list(spec.get("groups"), "groups")):
        text = _group(group, render)
        if not text:
            continue
        if parts:
            parts.append(_logic(inter[index - 1] if 0 < index <= len(inter) else None))
        parts.append(text)
    return " ".join(parts)


def _group(group: Any, render: _Render) -> str:
    if not isinstance(group, dict):
        raise PreviewError("Invalid filter: each group must be an object with 'conditions'.")
    conditions = [c for c in (_condition(raw, render) for raw in _list(group.get("conditions"), "conditions")) if c]
    if not conditions:
        return ""
    text = f" {_logic(group.get('intraLogic'))} ".join(conditions)
    return f"({text})" if len(conditions) > 1 else text


def _condition(raw: Any, render: _Render) -> str:
    if not isinstance(raw, dict):
        raise PreviewError("Invalid filter: each condition must be an object with column, operator and value.")
    column = _column(raw.get("column"))
    if column is None:
        return ""  # spec 2.5: a column that is not a name drops the condition
    op = _operator(raw.get("operator"))
    value = _text(raw.get("value"))
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{column} {op}"
    if op in ("IN", "NOT IN"):
        if value == "" or raw.get("value") == []:
            return ""  # no list at all ("", [] or null) drops the condition, as an empty value does below
        return f"{column} {op} ({_in_list(raw.get('value'), render)})"
    if value == "":
        return ""  # spec 2.5: an empty value drops the condition
    if op == "BETWEEN":
        upper = _text(raw.get("value2"))
        if upper == "":
            raise PreviewError(f"Filter on {column}: BETWEEN needs both 'value' and 'value2'.")
        return f"{column} BETWEEN {render(value, False)} AND {render(upper, False)}"
    if op in _LIKE:
        return f"{column} {op} {render(value if '%' in value or '_' in value else f'%{value}%', True)}"
    return f"{column} {op} {render(value, False)}"


def _column(raw: Any) -> str | None:
    """``t."Col"`` -> ``"t"."Col"``; anything that is not dotted names gives ``None``."""
    if not isinstance(raw, str):
        return None
    parts: list[str] = []
    position = 0
    while match := _COLUMN_PART.match(raw, position):
        part = match.group()
        parts.append(quote_identifier(part[1:-1].replace('""', '"') if part.startswith('"') else part))
        position = match.end()
        if position == len(raw):
            return ".".join(parts)
        if raw[position] != ".":
            return None
        position += 1
    return None


def _operator(raw: Any) -> str:
    op = " ".join(str(raw if raw is not None else "").split()).upper()
    if op not in OPERATORS:
        raise PreviewError(f"Unknown filter operator {_short(raw)}: use one of {', '.join(OPERATORS)}.")
    return op


def _logic(raw: Any) -> str:
    if raw is None or raw == "":
        return "AND"
    word = str(raw).strip().upper()
    if word not in LOGIC_WORDS:
        raise PreviewError(f"Unknown filter logic {_short(raw)}: use one of {', '.join(LOGIC_WORDS)}.")
    return word


def _in_list(raw: Any, render: _Render) -> str:
    items = [_text(v) for v in raw] if isinstance(raw, list) else _text(raw).split(",")
    return ", ".join(render(item.strip(), False) for item in items)


def _literal(value: str, text: bool) -> str:
    """A number as written when it is one (and ``text`` is not asked for), else a quoted string."""
    return value if not text and _NUMERIC.fullmatch(value) else quote_literal(value)


def _placeholder(value: str, text: bool) -> str:
    """A constant that lexes and parses like ``_literal(value, text)``: same kind, same sign.

    Kept as they are, so that the real text is parsed as before: a number of more than 18 characters (past
    BIGINT, where DuckDB types it otherwise) and a string that cannot be sent as UTF-8 (a lone surrogate).
    """
    if not text and (match := _NUMERIC.fullmatch(value)):
        if len(value) > _PLAIN_NUMBER:
            return value
        return ("-0" if value.startswith("-") else "0") + (".0" if match.group(1) else "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return quote_literal(value)
    return "''"


def _text(value: Any) -> str:
    """Values as text: JSON numbers and booleans too (the old code raised AttributeError on them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PreviewError(f"Invalid filter: '{field}' must be a list.")
    return value


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
