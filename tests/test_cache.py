"""The preview cache key: every field that changes the answer, encoded so that no two requests share a key."""

from __future__ import annotations

import pytest

from rosetta_jobs.preview.cache import cache_key
from rosetta_jobs.preview.request import PreviewRequest


def request(**fields: object) -> PreviewRequest:
    base: dict[str, object] = {"sql": None, "source_id": 1, "destination_id": 2, "table_name": "orders"}
    return PreviewRequest(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # the Celery worker's key joined "sql:...|source:..." unescaped: these met
        ({"sql": "a|source:1|dest:2|table:x", "table_name": "y"}, {"sql": "a", "table_name": "x|table:y"}),
        ({"table_name": "t|filter:a"}, {"table_name": "t", "filter_sql": "a"}),
        ({"sql": None}, {"sql": ""}),
        ({"filter_sql": None}, {"filter_sql": ""}),
        ({"include_profiling": True}, {"include_profiling": False}),
        ({"row_limit": 500}, {"row_limit": 50}),
        ({"sql": 'x","y'}, {"sql": "x", "table_name": 'y","orders'}),
    ],
    ids=[
        "pipe-in-sql",
        "pipe-in-table",
        "none-vs-empty-sql",
        "none-vs-empty-filter",
        "profiling",
        "row-limit",
        "quotes",
    ],
)
def test_different_requests_never_share_a_key(one: dict[str, object], other: dict[str, object]) -> None:
    # Given two requests that differ in one field (or in where a separator falls)
    # When their keys are computed
    # Then they differ
    assert cache_key(request(**one)) != cache_key(request(**other))


def test_the_key_is_stable_and_in_the_cache_namespace() -> None:
    # Given the same request twice (the size cap is not part of the answer)
    first, second = cache_key(request(sql="SELECT 1")), cache_key(request(sql="SELECT 1", max_sql_bytes=5))
    # Then the key is the same, a sha256 under preview:
    assert first == second and first.startswith("preview:") and len(first) == len("preview:") + 64
