"""The preview cache: a key of every field that changes the answer, and hits handed on as the bytes stored."""

from __future__ import annotations

import pytest
import redis

from rosetta_jobs import codec
from rosetta_jobs.preview.cache import PreviewCache, cache_key
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


def test_a_hit_comes_back_as_the_stored_bytes(results_redis: redis.Redis) -> None:
    # Given a result cached as its executor encoded it
    cache, key = PreviewCache(results_redis, ttl=60), request(table_name="hit")
    stored = codec.dumps({"columns": ["id"], "column_types": ["number"], "data": [{"id": 1}], "error": None})
    cache.put(key, stored)
    # When the same request looks it up
    hit = cache.get(key)
    # Then it gets those bytes, spliced as they are into a state, and the same value when read
    assert isinstance(hit, codec.Raw) and hit.data == stored
    assert codec.loads(codec.dumps({"result": hit})) == {"result": codec.loads(stored)}
    assert hit["data"] == [{"id": 1}]
    results_redis.delete(cache_key(key))


def test_an_entry_that_is_not_a_json_object_is_a_miss(results_redis: redis.Redis) -> None:
    # Given a cache entry no worker wrote
    cache, key = PreviewCache(results_redis, ttl=60), request(table_name="garbage")
    results_redis.set(cache_key(key), b"not json")
    # When the request looks it up, Then it runs instead of splicing the entry into its state
    assert cache.get(key) is None
    results_redis.delete(cache_key(key))
