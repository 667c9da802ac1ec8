"""JSON for task state, the preview cache and the executors' wire, and JSON that is passed on undecoded.

A preview result is ~150 KB of JSON. It is encoded once, in its executor, and from there it travels as
bytes (``Raw``): into the cache, into the SUCCESS meta (spliced in by ``dumps``), back out of the cache
on a hit. Nothing on the worker's side decodes it unless something reads it.

Encoding is orjson's (~3x pydantic-core's, ~10x the standard library's, measured in ``docs/benchmarks.md``);
what orjson does not take (integers past 64 bits, and the types whose text pydantic-core has always chosen:
datetimes, decimals, sets, bytes) goes through pydantic-core, so the bytes stored are what they were.
Decoding stays pydantic-core's: orjson reads an integer past 64 bits as a float, silently. NaN and
±Infinity become ``null`` either way, so what is stored is always strict JSON; a value JSON cannot hold
raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = ["Raw", "dumps", "loads"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class Raw(Mapping[str, Any]):
    """A JSON object already encoded: written as is by ``dumps``, decoded on first read (it is a ``Mapping``)."""

    __slots__ = ("_value", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._value: dict[str, Any] | None = None

    @property
    def value(self) -> dict[str, Any]:
        if self._value is None:
            decoded = loads(self.data)
            if not isinstance(decoded, dict):
                raise ValueError("Raw holds JSON that is not an object")
            self._value = decoded
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"Raw({len(self.data)} bytes)"


def _orjson_default(value: Any) -> Any:
    if isinstance(value, Raw):
        return orjson.Fragment(value.data)
    raise TypeError  # the whole value then goes through pydantic-core


def _pydantic_fallback(value: Any) -> Any:
    if isinstance(value, Raw):
        return value.value
    import pydantic_core

    raise pydantic_core.PydanticSerializationError(f"Unable to serialize unknown type: {type(value)}")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_orjson_default, option=_OPTIONS)
    except TypeError:
        import pydantic_core  # on first use: an executor, which never decodes with it, saves its ~13 MB

        return pydantic_core.to_json(value, inf_nan_mode="null", fallback=_pydantic_fallback)


def loads(data: str | bytes) -> Any:
    import pydantic_core

    return pydantic_core.from_json(data)
