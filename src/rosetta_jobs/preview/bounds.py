"""The size of a preview's answer: bounded before it is converted, and again as the JSON that is stored.

A preview's rows go to Redis twice (the task state, the cache) and to the backend's poller. Without a
bound, ``SELECT repeat('ab', 500000) FROM orders`` wrote a 500 MB task state, and at 600 MB Redis
refused it. Two limits, both preview errors that name their setting:

- ``PREVIEW_MAX_CELL_BYTES``: the largest text or binary value, at any depth of a nested value; checked
  on the Arrow table with Arrow's kernels, before a Python object is made;
- ``PREVIEW_MAX_RESULT_BYTES``: the result's JSON. Arrow's own size is checked first against a multiple
  of it (JSON of small numbers can be a few times smaller than Arrow's 8-byte values, never much more),
  so a huge table is refused without converting it; then the JSON itself, exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import PreviewError

if TYPE_CHECKING:  # Arrow is loaded by the executor only: the worker imports this module for ``shown_size``
    import pyarrow as pa

__all__ = ["ARROW_FACTOR", "check_cells", "encode_result", "shown_size"]

#: Arrow bytes per JSON byte above which a table cannot fit ``PREVIEW_MAX_RESULT_BYTES``.
ARROW_FACTOR = 4


def shown_size(size: int) -> str:
    """``4 MB``, ``100 KB``, ``512 B``: the decimal units the settings are written in."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} B"


def check_cells(table: pa.Table, *, max_cell_bytes: int, max_result_bytes: int) -> None:
    """Refuse a table with a value over ``max_cell_bytes``, or far too large to become the result."""
    size = table.nbytes
    if size > ARROW_FACTOR * max_result_bytes:
        raise _too_large(max_result_bytes)
    if size <= max_cell_bytes:  # no value is larger than all the table's buffers together: nothing to measure
        return
    for name, column in zip(table.column_names, table.columns, strict=True):
        largest = max((_largest(chunk) for chunk in column.chunks), default=0)
        if largest > max_cell_bytes:
            raise PreviewError(
                f"A value in column {name!r} has {shown_size(largest)}; a preview shows values of at most "
                f"{shown_size(max_cell_bytes)} (PREVIEW_MAX_CELL_BYTES). Select a shorter expression, "
                f"e.g. left({name}, 1000)."
            )


def encode_result(result: dict[str, Any], *, max_result_bytes: int) -> bytes:
    """The result's JSON, as stored and sent; refused when over ``max_result_bytes``."""
    data = codec.dumps(result)
    if len(data) > max_result_bytes:
        raise _too_large(max_result_bytes)
    return data


def _too_large(limit: int) -> PreviewError:
    return PreviewError(
        f"The preview's result is larger than {shown_size(limit)} (PREVIEW_MAX_RESULT_BYTES): select fewer or "
        "narrower columns, or fewer rows."
    )


def _largest(arr: pa.Array) -> int:
    """Bytes of the longest text or binary value in ``arr``, nested values included."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        return _largest(arr.storage)
    if pa.types.is_dictionary(t):
        return _largest(arr.dictionary)
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return _largest(arr.cast(pa.large_binary()))
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        lengths = pc.binary_length(arr)
        value = pc.max(lengths).as_py() if len(lengths) else None
        return int(value) if value is not None else 0
    if pa.types.is_fixed_size_binary(t):
        return int(t.byte_width) if len(arr) else 0
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _largest(arr.cast(pa.large_list(t.value_field)))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _largest(arr.flatten())
    if pa.types.is_map(t):
        return max(_largest(arr.keys), _largest(arr.items))
    if pa.types.is_struct(t):
        return max((_largest(child) for child in arr.flatten()), default=0)
    return 0
