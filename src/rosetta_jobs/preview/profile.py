"""Per-column statistics of a preview (spec 2.9), JSON-safe.

Values that come from the data (min, max, top values) are rendered by the serializer's own
rules, so a profile's ``max`` of a timestamp column reads exactly like the cells above it.
Computed statistics (mean, standard deviation, median) are plain floats rounded to 4 places;
a non-finite one is ``null``. A statistic Arrow cannot compute for a type is left out, and a
failure inside one column never costs the other columns their profile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .serialize import column_names, json_values

# The standard library's logger, not loguru: this runs in executor processes, which load as little as they can.
logger = logging.getLogger(__name__)

__all__ = ["TOP_VALUES", "profile"]

#: How many of the most frequent values ``top_values`` lists.
TOP_VALUES = 10


def profile(table: pa.Table) -> list[dict[str, Any]]:
    """One dict per column, in column order, named like the serializer names them (``id``, ``id_2``)."""
    names = column_names(table.column_names)
    return [_column(name, table.column(i), table.num_rows) for i, name in enumerate(names)]


def _column(name: str, column: pa.ChunkedArray, total: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"column": name, "type": str(column.type), "total_count": total}
    entry["null_count"] = column.null_count
    entry["null_percent"] = _percent(column.null_count, total)
    if total == 0:
        entry.update(distinct_count=0, distinct_percent=0.0)
        return entry
    entry.update(distinct_count=None, distinct_percent=None)
    try:
        arr = _plain_array(column)
    except Exception as exc:  # a column Arrow cannot even combine still keeps its base keys
        logger.debug("profile of %s: %s", name, exc)
        return entry
    for stat in _stats_for(arr.type):
        try:
            entry.update(stat(arr, total))
        except Exception as exc:  # an unsupported statistic is left out, never fatal
            logger.debug("profile of %s: %s not computed: %s", name, stat.__name__, exc)
    return entry


_Stat = Callable[[pa.Array, int], dict[str, Any]]


def _plain_array(column: pa.ChunkedArray) -> pa.Array:
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _storage(arr: pa.Array) -> pa.Array:
    return arr.storage if isinstance(arr.type, pa.BaseExtensionType) else arr


def _stats_for(t: pa.DataType) -> list[_Stat]:
    if isinstance(t, pa.BaseExtensionType):
        return [_distinct, _top_values]
    if _is_numeric(t):
        return [_distinct, _range, _mean, _std_dev, _median, _top_values]
    if _is_ordered(t):
        return [_distinct, _range, _top_values]
    return [_distinct, _top_values]


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_ordered(t: pa.DataType) -> bool:
    """Temporal, text and binary columns get a min and a max (intervals have no order in Arrow)."""
    return bool(
        pa.types.is_date(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_time(t)
        or pa.types.is_duration(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


def _distinct(arr: pa.Array, total: int) -> dict[str, Any]:
    """Distinct values, a null counting as one value (as ``len(pc.unique(...))`` did in the Celery worker)."""
    distinct = pc.count_distinct(_storage(arr), mode="all").as_py()
    return {"distinct_count": distinct, "distinct_percent": _percent(distinct, total)}


def _range(arr: pa.Array, total: int) -> dict[str, Any]:
    """``min`` and ``max``, rendered like cells; left out when the column has no (non-NaN) value."""
    bounds = pc.min_max(arr)
    pair = pa.array([bounds["min"], bounds["max"]], type=arr.type)
    if pair.null_count or (pa.types.is_floating(arr.type) and pc.any(pc.is_nan(pair)).as_py()):
        return {}
    low, high = json_values(pair)
    return {"min": low, "max": high}


def _mean(arr: pa.Array, total: int) -> dict[str, Any]:
    return _number("mean", pc.mean(pc.cast(arr, pa.float64(), safe=False)))


def _std_dev(arr: pa.Array, total: int) -> dict[str, Any]:
    """Population standard deviation (ddof=0), as in the Celery worker."""
    return _number("std_dev", pc.stddev(pc.cast(arr, pa.float64(), safe=False), ddof=0))


def _median(arr: pa.Array, total: int) -> dict[str, Any]:
    """The exact median (the Celery worker used a t-digest approximation, ``1.797e308`` for inf)."""
    return _number("median", pc.quantile(pc.cast(arr, pa.float64(), safe=False), q=0.5, interpolation="midpoint")[0])


def _number(key: str, scalar: pa.Scalar) -> dict[str, Any]:
    """A statistic as a float rounded to 4 places; ``null`` when not finite, absent when there was no data."""
    value = scalar.as_py()
    if value is None:
        return {}
    value = float(value)
    return {key: round(value, 4) if math.isfinite(value) else None}


def _top_values(arr: pa.Array, total: int) -> dict[str, Any]:
    """The most frequent values, nulls included as ``null``, ties in order of first appearance."""
    counts = pc.value_counts(_storage(arr))
    values, frequencies = counts.field("values"), counts.field("counts")
    order = pc.array_sort_indices(frequencies, order="descending")[:TOP_VALUES]
    values = values.take(order)
    if isinstance(arr.type, pa.BaseExtensionType):
        values = arr.type.wrap_array(values)
    top = [
        {"value": value, "count": count, "percent": _percent(count, total)}
        for value, count in zip(json_values(values), frequencies.take(order).to_pylist(), strict=True)
    ]
    return {"top_values": top}


def _percent(part: int, total: int) -> float:
    return round(part / total * 100, 2) if total else 0.0
