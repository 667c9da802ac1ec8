"""DuckDB's error texts made fit to show: no other relation suggested, no alias, bounded."""

from __future__ import annotations

from rosetta_jobs.preview.messages import MAX_ERROR_CHARS, clean_error
from rosetta_jobs.preview.parsing import TableRef

ALIAS = "pg_src_main_src"
ORDERS = TableRef("public", "orders")


def test_a_suggestion_of_another_catalogs_table_is_dropped() -> None:
    # Given DuckDB's answer to SELECT NULL::secretz with a source attached
    text = 'Catalog Error: Type with name secretz does not exist!\nDid you mean "pg_src_main_src.secrets"?\n\nLINE 1: x'
    # When it is cleaned
    shown = clean_error(text, alias=ALIAS, table=ORDERS)
    # Then the error stays, the suggestion is gone
    assert shown == "Catalog Error: Type with name secretz does not exist!\n\nLINE 1: x"


def test_a_plain_suggestion_stays() -> None:
    # Given a function-name suggestion (a built-in, no catalog)
    text = 'Catalog Error: Scalar Function with name sqr does not exist!\nDid you mean "sqrt"?'
    # When it is cleaned, Then it is kept: it names nothing of the source
    assert clean_error(text, alias=ALIAS, table=ORDERS) == text


def test_the_statement_echo_loses_the_alias() -> None:
    # Given a LINE echo of the wrapped statement
    text = f'LINE 1: ...FROM "{ALIAS}"."public"."orders" AS "orders" WHERE x; also {ALIAS}.public.secrets'
    # When it is cleaned
    shown = clean_error(text, alias=ALIAS, table=ORDERS, shown="orders")
    # Then the previewed table is named as the user named it, and the alias is nowhere
    assert ALIAS not in shown
    assert 'FROM orders AS "orders"' in shown and "source.public.secrets" in shown


def test_a_long_message_is_cut() -> None:
    # Given a conversion error quoting a whole aggregated column
    text = "Conversion Error: Could not convert string '" + "PAID," * 5000 + "' to INT32"
    # When it is cleaned
    shown = clean_error(text, alias=ALIAS)
    # Then it is cut at MAX_ERROR_CHARS
    assert len(shown) <= MAX_ERROR_CHARS and shown.endswith("(cut here)")
