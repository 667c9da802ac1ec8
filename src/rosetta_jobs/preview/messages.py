"""DuckDB's error texts, made fit to show the user who wrote the query.

DuckDB's messages are helpful to a fault: "Did you mean" suggests names from every attached catalog
(``SELECT NULL::secretz`` offers ``pg_src_main.secrets``), and ``LINE 1:`` echoes the statement that
ran, which is ours (the source's alias, the wrapping CTE), not the user's. A conversion error quotes the
value it could not convert, which may be a whole aggregated table. So every message that becomes a
preview error passes here:

- suggestions naming anything qualified (``catalog.schema.table``, ``schema.table``) are dropped: what is
  left are plain names of functions, types and columns of the query's own relations;
- the source's qualified table becomes the name the user asked for, and the alias itself ``source``;
- the text is cut to ``MAX_ERROR_CHARS``.

Passwords are ``redact``'s business, before this.
"""

from __future__ import annotations

import re

from .parsing import TableRef

__all__ = ["MAX_ERROR_CHARS", "clean_error"]

#: Characters of an error message a preview returns; DuckDB's own are a few hundred.
MAX_ERROR_CHARS = 1_000

_SUGGESTION = re.compile(r'\s*Did you mean "([^"\n]*)"\??', re.IGNORECASE)


def clean_error(text: str, *, alias: str, table: TableRef | None = None, shown: str | None = None) -> str:
    """``text`` without suggestions of other relations, without the source's alias, and at most ``MAX_ERROR_CHARS``."""

    def suggestion(match: re.Match[str]) -> str:
        named = match.group(1)
        return "" if "." in named or alias.lower() in named.lower() else match.group(0)

    text = _SUGGESTION.sub(suggestion, text)
    if table is not None:
        qualified = ".".join(_quoted(part) for part in (alias, table.schema, table.name))
        name = shown or (table.name if table.schema == "public" else f"{table.schema}.{table.name}")
        text = text.replace(qualified, name)
    text = re.sub(re.escape(f'"{alias}"') + "|" + rf"\b{re.escape(alias)}\b", "source", text, flags=re.IGNORECASE)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 15].rstrip() + " ... (cut here)"
    return text


def _quoted(part: str) -> str:
    return '"' + part.replace('"', '""') + '"'
