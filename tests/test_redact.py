"""One redaction helper: no password survives in a URL, a conninfo string or an error text."""

from __future__ import annotations

import pytest

from rosetta_jobs.redact import redact

HARD_PASSWORDS = ["p@ss", "p:ss", "p/ss", "p%40ss", "it's", 'say "hi"', "two words", "a@b:c/d%e 'f\" g"]


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_url_userinfo_password_is_removed_whatever_it_contains(password: str) -> None:
    # Given a Redis URL whose password was written unencoded
    url = f"redis://user:{password}@127.0.0.1:6379/2"
    # When it is redacted
    shown = redact(f"cannot reach the broker at {url}: connection refused")
    # Then no part of the password is left, and user, host and the rest of the message are
    assert shown == "cannot reach the broker at redis://user:***@127.0.0.1:6379/2: connection refused"


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_quoted_conninfo_password_is_removed(password: str) -> None:
    # Given a libpq key=value string, the password quoted and escaped as libpq wants it
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    conninfo = f"host=db port=5432 user=u password={quoted} dbname=x"
    # When it is redacted, knowing nothing of the password
    shown = redact(f'Unable to connect to Postgres at "{conninfo}"')
    # Then the password is gone and the other keywords stay
    assert shown == "Unable to connect to Postgres at \"host=db port=5432 user=u password='***' dbname=x\""


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ('Unable to connect to Postgres at "host=h password=\'se\\\'cret\' user=u"', ("se'cret",),
         'Unable to connect to Postgres at "host=h password=\'***\' user=u"'),
        ("x password=abc y", (), "x password=*** y"),
        ("x PASSWORD = abc&sslmode=require", (), "x PASSWORD = ***"),
        ("host=h password=p&ss user=u", (), "host=h password=*** user=u"),
        ("host=h password=it\\'s user=u", (), "host=h password=*** user=u"),
        ("host=h password=p\\ ss user=u", (), "host=h password=*** user=u"),
        ("host=h password=a;b user=u", (), "host=h password=*** user=u"),
        ("postgresql://user:p%40ss@db:5432/x failed", (), "postgresql://user:***@db:5432/x failed"),
        ("redis://:only-password@host:6379/1", (), "redis://:***@host:6379/1"),
        ("the secret S3cr3t! appears", ("S3cr3t!",), "the secret *** appears"),
        ("a longer secret contains the short one", ("short", "the short one"), "a longer secret contains ***"),
        ("Catalog Error: no table x!", ("", None), "Catalog Error: no table x!"),
        ("redis://user@host:6379/1 has no password", (), "redis://user@host:6379/1 has no password"),
    ],
)  # fmt: skip
def test_redact_forms(text: str, secrets: tuple[str | None, ...], expected: str) -> None:
    assert redact(text, *secrets) == expected


@pytest.mark.parametrize(
    "password",
    ["Leaky\x00Secret-4242", "it's\x00'quoted'", "back\\slash'quote", "\x00only-after-nul"],
    ids=["nul", "nul-and-quotes", "backslash-and-quote", "leading-nul"],
)
def test_a_known_password_goes_in_every_form_a_message_shows_it(password: str) -> None:
    # Given the forms an ATTACH error echoes: the conninfo libpq-escaped inside an SQL literal, cut at a NUL
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    cut = escaped.split("\x00")[0]
    texts = [
        f"unterminated quoted string at or near \"'host=''h'' password=''{cut}\"",
        f"password=''{escaped.replace(chr(39), chr(39) * 2)}'' dbname=''x''",
        f"the password was {password.replace(chr(0), '')} and {password.split(chr(0))[-1]}",
    ]
    for text in texts:
        # When it is redacted, knowing the password
        shown = redact(text, password)
        # Then no piece of it is left
        for piece in (p for p in password.split("\x00") if len(p) > 3):
            assert piece not in shown and piece.replace("'", "''") not in shown, shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("near \"'host=''h'' password=''abc\"", "near \"'host=''h'' password=***"),
        ("x password=''ab\\''c'' y", "x password=''***'' y"),
        ("x password='never closed", "x password=***"),
    ],
)
def test_sql_quoted_and_unterminated_keywords_are_masked(text: str, expected: str) -> None:
    # Given a conninfo password inside an SQL literal, or a quote the text was cut in
    # When it is redacted knowing nothing, Then the password is masked
    assert redact(text) == expected
