"""The preview pipeline: validate -> build the query -> run in DuckDB -> serialise -> cache.

Plain functions of (request, connection config) -> result; nothing here imports the
broker, the actors or the middleware.
"""

from __future__ import annotations

from .request import PreviewRequest, error_result

__all__ = ["PreviewRequest", "error_result"]
