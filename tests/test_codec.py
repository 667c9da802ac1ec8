"""The JSON of task state: orjson's speed, the text pydantic-core always wrote, and encoded JSON spliced in."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pydantic_core
import pytest

from rosetta_jobs import codec

SAMPLES = [
    {"when": dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2), "t": dt.time(1, 2)},
    {"big": 2**70, "small": -(2**63), "ratio": 0.1, "exp": 1e-7, "nan": float("nan"), "inf": float("inf")},
    {"price": decimal.Decimal("1.10"), "id": uuid.UUID(int=7), "tags": {"a"}, "raw": b"ab", "pair": (1, 2)},
    {1: "int key", "nested": [{"x": None, "y": True}], "text": "é \u2028 \x00"},
]


@pytest.mark.parametrize("value", SAMPLES, ids=["datetimes", "numbers", "others", "keys-and-text"])
def test_dumps_writes_what_pydantic_core_wrote(value: dict[object, object]) -> None:
    # Given values of every kind task state holds, When encoded, Then the text decodes to what it always did
    assert pydantic_core.from_json(codec.dumps(value)) == pydantic_core.from_json(
        pydantic_core.to_json(value, inf_nan_mode="null")
    )


def test_datetimes_keep_pydantic_cores_text() -> None:
    # Given a UTC datetime (orjson and pydantic-core spell it differently), Then it is written as before
    assert codec.dumps({"d": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}) == b'{"d":"2026-01-01T00:00:00Z"}'


def test_encoded_json_is_spliced_into_a_document_as_is() -> None:
    # Given a result encoded elsewhere (an executor's bytes, a cache hit)
    raw = codec.Raw(b'{"data":[{"id":1}],"error":null}')
    # When it is the result of a state, also next to a value only pydantic-core takes
    plain, fallback = codec.dumps({"result": raw}), codec.dumps({"result": raw, "big": 2**70})
    # Then its bytes are in the document unchanged, and it reads as a mapping
    assert plain == b'{"result":{"data":[{"id":1}],"error":null}}'
    assert codec.loads(fallback) == {"result": {"data": [{"id": 1}], "error": None}, "big": 2**70}
    assert dict(raw) == {"data": [{"id": 1}], "error": None}


def test_a_value_json_cannot_hold_is_a_value_error() -> None:
    # Given an object JSON has no form for, When encoded, Then ValueError (the state layer turns it into FAILURE)
    with pytest.raises(ValueError):
        codec.dumps({"x": object()})
