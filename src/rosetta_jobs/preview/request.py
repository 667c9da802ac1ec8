"""What a preview is asked to do, and the shape of its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PreviewError

__all__ = ["MAX_TABLE_NAME", "PreviewRequest", "error_result"]

#: Characters of ``table_name``: two quoted PostgreSQL identifiers (63 bytes each) fit many times over.
MAX_TABLE_NAME = 1_000


@dataclass(frozen=True, kw_only=True)
class PreviewRequest:
    """The Celery task's arguments, plus the row limit in force when it runs."""

    sql: str | None
    source_id: int
    destination_id: int
    table_name: str
    filter_sql: str | None = None
    include_profiling: bool = False
    row_limit: int = 500
    #: Bytes (UTF-8) ``sql`` and ``filter_sql`` may each have (``PREVIEW_MAX_SQL_BYTES``).
    max_sql_bytes: int = 100_000

    @classmethod
    def from_arguments(
        cls,
        sql: Any,
        source_id: Any,
        destination_id: Any,
        table_name: Any,
        filter_sql: Any = None,
        include_profiling: Any = False,
        *,
        row_limit: int,
        max_sql_bytes: int = 100_000,
    ) -> PreviewRequest:
        """The request of the task's arguments as they came (``ValueError``/``TypeError`` for ids that are not ints).

        The one conversion of the arguments: the actor and the cache lookup at the door (``door``) build the
        same request, so they compute the same cache key.
        """
        return cls(
            sql=sql,
            source_id=int(source_id),
            destination_id=int(destination_id),
            table_name=str(table_name),
            filter_sql=filter_sql,
            include_profiling=bool(include_profiling),
            row_limit=row_limit,
            max_sql_bytes=max_sql_bytes,
        )

    @property
    def custom_sql(self) -> str | None:
        """The user's SQL, or ``None`` when the preview is of the whole table."""
        return self.sql if self.sql and self.sql.strip() else None

    def check_input(self) -> None:
        """Refuse, before any parsing, text no preview can run as written: a NUL, or more than the size caps.

        A NUL ends a C string, so DuckDB or libpq would run less than the user wrote; and reading SQL costs
        time and memory in proportion to its size, so the caps come before any parser sees it.
        """
        fields = (("sql", self.sql), ("filter_sql", self.filter_sql), ("table_name", self.table_name))
        for name, value in fields:
            if isinstance(value, str) and "\x00" in value:
                raise PreviewError(f"{name} contains a NUL character (\\0), which SQL cannot hold: remove it.")
        if len(self.table_name) > MAX_TABLE_NAME:
            raise PreviewError(f"table_name is longer than {MAX_TABLE_NAME:,} characters: name one table.")
        for name, value in fields[:2]:
            size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0
            if size > self.max_sql_bytes:
                raise PreviewError(
                    f"{name} is {size:,} bytes; a preview accepts at most {self.max_sql_bytes:,} bytes "
                    "(PREVIEW_MAX_SQL_BYTES). Shorten the query."
                )


def error_result(message: str) -> dict[str, Any]:
    """A preview that could not run: still a SUCCESS for Celery, with ``error`` set for the UI."""
    return {"columns": [], "column_types": [], "data": [], "error": message}
