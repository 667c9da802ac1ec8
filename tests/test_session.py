"""DuckDB sessions: secrets never survive in an error text."""

from __future__ import annotations

import pytest

from rosetta_jobs.preview.session import scrub


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        # DuckDB's connect error repeats the connection string, the password quoted and escaped
        ('Unable to connect to Postgres at "host=h password=\'se\\\'cret\' user=u"', ("se'cret",),
         'Unable to connect to Postgres at "host=h password=\'***\' user=u"'),
        ("x password=abc y", (), "x password=*** y"),
        ("postgresql://user:p%40ss@db:5432/x failed", (), "postgresql://user:***@db:5432/x failed"),
        ("the secret S3cr3t! appears", ("S3cr3t!",), "the secret *** appears"),
        ("Catalog Error: Table with name x does not exist!", ("",), "Catalog Error: Table with name x does not exist!"),
    ],
)  # fmt: skip
def test_scrub_removes_every_form_of_the_password(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert scrub(text, *secrets) == expected
