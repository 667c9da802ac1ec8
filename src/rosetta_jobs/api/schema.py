"""``POST /schema``: the backend's node-schema call, answered in the Celery server's error shape.

The backend uses one setting, ``WORKER_HEALTH_URL``, for ``GET /health`` and ``POST /schema``
(``../shared/spec/rosetta-worker.md`` 6.2, 11.4). Once it points at ``rosetta-jobs serve``, a 404 here
would break the flow editor's node schemas. Until the flow engine is ported (it builds the real
schema), the answer is the one the Celery server gave for any error, ``{"columns": []}`` with 200,
which the backend and the frontend already handle, and each call says so in the log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from loguru import logger
from pydantic import BaseModel, Field

__all__ = ["router"]

router = APIRouter(tags=["ops"])


class Column(BaseModel):
    column_name: str
    data_type: str


class SchemaAnswer(BaseModel):
    columns: list[Column] = Field(description="always empty until the flow engine is ported")


@router.post("/schema", response_model=SchemaAnswer)
def schema(request: dict[str, Any] | None = Body(default=None)) -> SchemaAnswer:  # noqa: B008 - FastAPI's idiom
    """A flow node's output columns. Not built yet: ``{"columns": []}``, as the Celery server answered errors."""
    node = request.get("node_id") if isinstance(request, dict) else None
    logger.warning(
        "POST /schema (node {}): node schemas come with the flow engine, which is not ported yet; "
        'answering {{"columns": []}} as the Celery server did for an error',
        node,
    )
    return SchemaAnswer(columns=[])
