"""The one way rosetta-jobs removes passwords from text it shows: errors, logs, answers, pages.

Three forms are covered, in this order:

1. the exact secrets the caller knows (longest first, so a password that contains another goes whole),
   in every form a message may quote them: as is, libpq-escaped (``\\'``), SQL-quoted (``''``), both, and
   cut at a NUL (C code shows what comes before it, so each part around a NUL goes on its own);
2. URL userinfo, ``scheme://user:PASSWORD@host``: the password runs to the *last* ``@`` of the line, so an
   unencoded ``@``, ``:``, ``/``, ``%``, quote or space in it is removed too (too much is redacted
   rather than too little);
3. ``password=...`` keywords (libpq conninfo, URL query parameters), quoted or not; an unquoted one
   runs to the next white space, so ``&``, ``;`` and backslash escapes in it go too. A conninfo inside an
   SQL literal (DuckDB's parser echoes ``ATTACH '... password=''x'''``) has its quotes doubled; a quoted
   value that never closes (the text was cut) runs to the end of the line.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MASK", "SQL_DIGEST_LENGTH", "redact", "sql_digest", "sql_sha256"]

MASK = "***"
#: Hex characters of a SQL digest shown in logs, history and the CLI: enough to tell statements apart.
SQL_DIGEST_LENGTH = 12

_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\n]*@")
_KEYWORD_FORMS = (
    # inside an SQL literal: password=''it\''s'' (libpq's quotes doubled, and the quote they escape)
    (re.compile(r"(password\s*=\s*)''(?:[^'\\]|\\''|\\.|'''')*''", re.IGNORECASE), rf"\g<1>''{MASK}''"),
    # ... and one the text was cut in (at a NUL): the rest of the line
    (re.compile(r"(password\s*=\s*)''(?!\*\*\*'')[^\n]*", re.IGNORECASE), rf"\g<1>{MASK}"),
    # password='it\'s' (libpq quoting: backslash escapes) and password='it''s' (SQL quoting): quotes kept
    (re.compile(r"(password\s*=\s*)'(?!'\*\*\*'')(?:[^'\\]|\\.|'')*'", re.IGNORECASE), rf"\g<1>'{MASK}'"),
    (re.compile(r'(password\s*=\s*)"(?:[^"\\]|\\.|"")*"', re.IGNORECASE), rf'\g<1>"{MASK}"'),
    # unquoted: up to white space, backslash escapes included (libpq), '&' and ';' too (too much, not too little)
    (re.compile(r"(password\s*=\s*)(?!['\"]\*\*\*)(?:\\.|[^\s\\'\"])+", re.IGNORECASE), rf"\g<1>{MASK}"),
    # a quote that never closes: the rest of the line
    (re.compile(r"(password\s*=\s*)(?!''\*\*\*''|'\*\*\*'|\"\*\*\*\")['\"][^\n]*", re.IGNORECASE), rf"\g<1>{MASK}"),
)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without any of ``secrets`` and without anything that looks like a password."""
    for secret in sorted({form for s in secrets if s for form in _forms(s)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    for pattern, replacement in _KEYWORD_FORMS:
        text = pattern.sub(replacement, text)
    return text


def _forms(secret: str) -> set[str]:
    """``secret`` as messages may quote it: as is, libpq-escaped, SQL-quoted, and each part around a NUL."""
    parts = {secret, *(part for part in secret.split("\x00") if part)}
    forms = set(parts)
    for part in parts:
        escaped = part.replace("\\", "\\\\").replace("'", "\\'")
        forms |= {escaped, part.replace("'", "''"), escaped.replace("'", "''")}
    return forms


def sql_sha256(sql: str) -> str:
    """The SQL's whole SHA-256 (hex): what task meta and dead-letter listings keep instead of the SQL."""
    return hashlib.sha256(sql.encode("utf-8", errors="surrogatepass")).hexdigest()


def sql_digest(sql: str) -> str:
    """The first ``SQL_DIGEST_LENGTH`` hex characters of the SQL's SHA-256: a statement named, not shown.

    A user's SQL can hold literals that are data (names, ids, secrets typed into a WHERE); logs, the task
    history and the CLI name it by this digest, which still tells two statements apart and matches the same
    statement across lines.
    """
    return sql_sha256(sql)[:SQL_DIGEST_LENGTH]
