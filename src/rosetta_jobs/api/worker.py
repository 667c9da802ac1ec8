"""``/worker``: what a DMZ worker may ask the trusted zone for, behind ``WORKER_API_KEY`` only.

A worker without ``DATABASE_URL`` and ``CREDENTIAL_ENCRYPTION_KEY`` (``remote_catalog.RemoteCatalog``)
asks here for the one source a preview needs, with its password decrypted by this service, which holds
the config database and the key. Answers are ``Cache-Control: no-store`` and never logged; the task and
admin keys open nothing here.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import PreviewError, RosettaJobsError
from .auth import require_worker_key

__all__ = ["router"]

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing x-worker-key header"},
    403: {"description": "wrong worker key, or WORKER_API_KEY not set on the service"},
    422: {"description": "no such source or destination, or one the preview cannot use"},
    503: {"description": "the config database cannot be read"},
}
_MAX_ID = 2**63 - 1
_NO_STORE = {"Cache-Control": "no-store"}
_lock = threading.Lock()

router = APIRouter(prefix="/worker", tags=["worker"], dependencies=[Depends(require_worker_key)],
                   responses=_AUTH_ERRORS)  # fmt: skip

RowId = Annotated[int, Path(ge=-_MAX_ID, le=_MAX_ID, description="the row's id in the config database")]


class SourceOut(BaseModel):
    """A PostgreSQL source with its password in clear: only ever sent to a worker."""

    id: int
    name: str
    host: str
    port: int
    database: str
    user: str
    password: str = Field(description="decrypted by the service")


class DestinationOut(BaseModel):
    id: int
    name: str
    type: str


def _catalog(request: Request) -> Any:
    """The service's config-database catalog, opened on first use (a service without workers never needs it)."""
    ops = request.app.state.ops
    with _lock:
        catalog = getattr(ops, "catalog", None)
        if catalog is None:
            from ..catalog import Catalog

            catalog = ops.catalog = Catalog.from_settings(ops.settings)
    return catalog


def _lookup(request: Request, kind: str, row_id: int) -> Any:
    try:
        return getattr(_catalog(request), kind)(row_id)
    except PreviewError as exc:
        raise HTTPException(422, str(exc)) from None
    except RosettaJobsError as exc:  # unreachable database, missing key: messages hold no password
        raise HTTPException(503, str(exc)) from None


@router.get("/sources/{source_id}", response_model=SourceOut)
def source(source_id: RowId, request: Request) -> JSONResponse:
    """The connection config of one source, for the preview a worker is running."""
    config = _lookup(request, "source", source_id)
    doc = SourceOut(id=source_id, name=config.name, host=config.host, port=config.port, database=config.database,
                    user=config.user, password=config.password)  # fmt: skip
    return JSONResponse(doc.model_dump(), headers=_NO_STORE)


@router.get("/destinations/{destination_id}", response_model=DestinationOut)
def destination(destination_id: RowId, request: Request) -> JSONResponse:
    """A destination's name and type: a preview only checks that it exists."""
    config = _lookup(request, "destination", destination_id)
    doc = DestinationOut(id=destination_id, name=config.name, type=config.type)
    return JSONResponse(doc.model_dump(), headers=_NO_STORE)
