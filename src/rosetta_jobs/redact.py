"""The one way rosetta-jobs removes passwords from text it shows: errors, logs, answers, pages.

Three forms are covered, in this order:

1. the exact secrets the caller knows (longest first, so a password that contains another goes whole);
2. URL userinfo, ``scheme://user:PASSWORD@host``: the password runs to the *last* ``@`` of the line, so an
   unencoded ``@``, ``:``, ``/``, ``%``, quote or space in it is removed too (too much is redacted
   rather than too little);
3. ``password=...`` keywords (libpq conninfo, URL query parameters), quoted or not; an unquoted one
   runs to the next white space, so ``&``, ``;`` and backslash escapes in it go too.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\n]*@")
_KEYWORD_FORMS = (
    # password='it\'s' (libpq quoting: backslash escapes) and password='it''s' (SQL quoting): quotes kept
    (re.compile(r"(password\s*=\s*)'(?:[^'\\]|\\.|'')*'", re.IGNORECASE), rf"\g<1>'{MASK}'"),
    (re.compile(r'(password\s*=\s*)"(?:[^"\\]|\\.|"")*"', re.IGNORECASE), rf'\g<1>"{MASK}"'),
    # unquoted: up to white space, backslash escapes included (libpq), '&' and ';' too (too much, not too little)
    (re.compile(r"(password\s*=\s*)(?!['\"]\*\*\*)(?:\\.|[^\s\\'\"])+", re.IGNORECASE), rf"\g<1>{MASK}"),
)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without any of ``secrets`` and without anything that looks like a password."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    for pattern, replacement in _KEYWORD_FORMS:
        text = pattern.sub(replacement, text)
    return text
