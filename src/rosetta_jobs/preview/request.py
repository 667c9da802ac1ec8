"""What a preview is asked to do, and the shape of its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PreviewRequest", "error_result"]


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

    @property
    def custom_sql(self) -> str | None:
        """The user's SQL, or ``None`` when the preview is of the whole table."""
        return self.sql if self.sql and self.sql.strip() else None


def error_result(message: str) -> dict[str, Any]:
    """A preview that could not run: still a SUCCESS for Celery, with ``error`` set for the UI."""
    return {"columns": [], "column_types": [], "data": [], "error": message}
