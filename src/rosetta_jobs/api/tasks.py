"""The task API: submit a preview, status, result (whole or by page), Server-Sent Events, cancel, and the
echo job, behind ``x-api-key``.

A user is named by the ``x-user-id`` header the backend sets, on every endpoint that counts a user (submits
and streams); it is normalised the way ``limits.normalize_user_id`` does, so one user is one count.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from redis import RedisError

from ..client import JobClient
from ..contracts import ECHO, PREVIEW
from ..errors import BrokerUnavailable, UserLimitExceeded
from ..states import FINAL_STATES, PENDING, SUCCESS, exception_message
from .auth import require_api_key
from .sse import task_events
from .streams import StreamLimitExceeded, StreamSlots, lease_seconds

__all__ = ["MAX_PAGES", "MAX_PAGE_SIZE", "MAX_TEST_SECONDS", "PreviewRequest", "ResultPage", "router"]

#: Longest echo job the test endpoint enqueues.
MAX_TEST_SECONDS = 60.0
#: Pages of a result one can ask for, and rows in one page (seed 003: 50 pages of 50 rows).
MAX_PAGES = 50
MAX_PAGE_SIZE = 500
_MAX_ID = 2**63 - 1

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing x-api-key header"},
    403: {"description": "wrong API key, or API_KEY not set on the service"},
}

router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[Depends(require_api_key)], responses=_AUTH_ERRORS)

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The task id (the message id)")]
UserId = Annotated[
    str | None,
    Header(
        alias="x-user-id",
        min_length=1,
        max_length=200,
        description="The user the backend acts for: submits count against MAX_ACTIVE_PER_USER, streams against "
        "MAX_STREAMS_PER_USER. Normalised (NFKC, trimmed, case-folded). Without it nothing is limited.",
    ),
]


class PreviewRequest(BaseModel):
    """The arguments of ``worker.preview.execute`` (``contracts.PREVIEW``), by name."""

    model_config = ConfigDict(extra="forbid")

    sql: str | None = Field(max_length=1_000_000, description="the user's SELECT; null previews the table")
    source_id: StrictInt = Field(ge=-_MAX_ID, le=_MAX_ID)
    destination_id: StrictInt = Field(ge=-_MAX_ID, le=_MAX_ID)
    table_name: str = Field(min_length=1, max_length=1000)
    filter_sql: str | None = Field(None, max_length=1_000_000)
    include_profiling: StrictBool = False


class ResultPage(BaseModel):
    """One page of a preview's rows, from the stored result."""

    task_id: str
    state: str
    ready: bool = Field(description="true once the state is final")
    page: int
    page_size: int
    pages: int = Field(description=f"pages there are, at most {MAX_PAGES}")
    total_rows: int = Field(description="rows of the whole result")
    columns: list[str]
    column_types: list[str]
    rows: list[Any] = Field(description="the page's rows; empty past the last page")
    error: str | None = Field(None, description="the preview's error, or why the task has no rows")


class TaskStatus(BaseModel):
    """``JobClient.get_task_status``: the backend's status dict."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    state: str = Field(description="PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE or REVOKED")
    status: str = Field(description="queued, running, completed, failed, cancelled, retry")
    meta: dict[str, Any] | None = Field(None, description="progress of a running task")
    result: Any = None
    error: str | None = None


class TaskResult(BaseModel):
    task_id: str
    state: str
    ready: bool = Field(description="true once the state is final")
    successful: bool
    result: Any = Field(None, description="the job's return value, when successful")
    error: str | None = Field(None, description="the exception's message, when failed")
    exc_type: str | None = None
    date_done: str | None = None


class Submitted(BaseModel):
    task_id: str
    state: str = PENDING
    status: str = "queued"


class Cancelled(BaseModel):
    task_id: str
    cancelled: bool = Field(description="false when the task had already ended, or was never submitted")
    state: str
    reason: str | None = None


def _client(request: Request) -> JobClient:
    client: JobClient = request.app.state.ops.client
    return client


def _stream_slots(request: Request) -> StreamSlots:
    ops = request.app.state.ops
    slots: StreamSlots | None = getattr(ops, "stream_slots", None)
    if slots is None:
        settings = ops.settings
        slots = StreamSlots(
            client=ops.async_results,
            namespace=settings.broker_namespace,
            limit=settings.max_streams_per_user,
            lease=lease_seconds(settings.sse_keepalive),
        )
        ops.stream_slots = slots
    return slots


def _enqueue(request: Request, contract: Any, args: tuple[Any, ...], user_id: str | None) -> Submitted:
    """Submit through the client, every refusal mapped to its status: 429 limit, 503 Redis, 422 arguments."""
    try:
        task_id = _client(request).submit(contract, args, user_id=user_id)
    except UserLimitExceeded as exc:
        raise HTTPException(429, str(exc)) from exc
    except BrokerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    except (TypeError, ValueError) as exc:  # arguments JSON cannot carry, a user id that normalises to nothing
        raise HTTPException(422, str(exc)) from exc
    return Submitted(task_id=task_id)


@router.post("/preview", response_model=Submitted, status_code=202, responses={422: {}, 429: {}, 503: {}})
def submit_preview(body: PreviewRequest, request: Request, user_id: UserId = None) -> Submitted:
    """Enqueue a SQL preview (``worker.preview.execute``) and answer its task id at once.

    Follow it with ``/tasks/{id}/events``, ``/tasks/{id}`` or ``/tasks/{id}/result?page=1``. An unknown source
    or bad SQL is the preview's own error, in the task's result; 429 when ``x-user-id`` is at its limit.
    """
    args = (body.sql, body.source_id, body.destination_id, body.table_name, body.filter_sql, body.include_profiling)
    return _enqueue(request, PREVIEW, args, user_id)


@router.get("/{task_id}", response_model=TaskStatus, response_model_exclude_none=True, responses={503: {}})
def get_status(task_id: TaskId, request: Request) -> JSONResponse:
    """The task's status, as the backend's ``WorkerClient.get_task_status`` returned it."""
    status = _client(request).get_task_status(task_id)
    return JSONResponse(status, status_code=503 if status.get("status") == "error" else 200)


@router.get("/{task_id}/result", response_model=TaskResult | ResultPage, responses={422: {}, 503: {}})
def get_result(
    task_id: TaskId,
    request: Request,
    page: Annotated[
        int | None, Query(ge=1, le=MAX_PAGES, description="1-based page of the rows; without it, the whole result")
    ] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 50,
) -> TaskResult | ResultPage:
    """The task's result once it is final (``ready`` is false before); with ``page``, one page of its rows."""
    try:
        meta = _client(request).store.get(task_id) or {}
    except BrokerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    state = str(meta.get("status", PENDING))
    info = meta.get("result")
    failed = state in FINAL_STATES and state != SUCCESS
    if page is not None:
        return _page(task_id, state, info, page, page_size)
    return TaskResult(
        task_id=task_id,
        state=state,
        ready=state in FINAL_STATES,
        successful=state == SUCCESS,
        result=info if state == SUCCESS else None,
        error=(exception_message(info) or state) if failed else None,
        exc_type=str(info.get("exc_type")) if failed and isinstance(info, dict) else None,
        date_done=meta.get("date_done"),
    )


def _page(task_id: str, state: str, info: Any, page: int, page_size: int) -> ResultPage:
    """Slice the stored rows; a task without rows (not done, failed, not tabular) is an empty page saying why."""
    tabular = state == SUCCESS and isinstance(info, dict) and isinstance(info.get("data"), list)
    rows: list[Any] = info["data"] if tabular else []
    if tabular:
        error = info.get("error")
    elif state not in FINAL_STATES:
        error = None
    elif state == SUCCESS:
        error = "the task's result has no rows"
    else:
        error = exception_message(info) or state
    start = (page - 1) * page_size
    return ResultPage(
        task_id=task_id,
        state=state,
        ready=state in FINAL_STATES,
        page=page,
        page_size=page_size,
        pages=min(math.ceil(len(rows) / page_size), MAX_PAGES),
        total_rows=len(rows),
        columns=[str(c) for c in info.get("columns") or []] if tabular else [],
        column_types=[str(c) for c in info.get("column_types") or []] if tabular else [],
        rows=rows[start : start + page_size],
        error=None if error is None else str(error),
    )


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one event per state change"}},
)
async def events(task_id: TaskId, request: Request, user_id: UserId = None) -> StreamingResponse:
    """Server-Sent Events: the current state, then each change; closed after a final state.

    429 when ``x-user-id`` already holds ``MAX_STREAMS_PER_USER`` open streams.
    """
    ops = request.app.state.ops
    stream = task_events(
        ops.async_results,
        task_id,
        keepalive=ops.settings.sse_keepalive,
        max_seconds=ops.settings.sse_max_seconds,
    )
    if user_id is not None:
        slots = _stream_slots(request)
        try:
            slot = await slots.take(user_id)
        except StreamLimitExceeded as exc:
            raise HTTPException(429, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        except RedisError as exc:
            raise HTTPException(503, f"Redis unreachable: {exc}") from exc
        stream = slots.hold(user_id, slot, stream)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/{task_id}/cancel", response_model=Cancelled, response_model_exclude_none=True, responses={503: {}})
def cancel(task_id: TaskId, request: Request) -> Cancelled:
    """Cancel a queued or running task (it becomes REVOKED); a finished or unknown task stays as it is."""
    try:
        return Cancelled.model_validate(_client(request).cancel(task_id))
    except BrokerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc


@router.post("/test", response_model=Submitted, status_code=202, responses={422: {}, 429: {}, 503: {}})
def submit_test(
    request: Request,
    message: Annotated[str, Query(max_length=10_000, description="what the echo job returns")] = "ping",
    steps: Annotated[int, Query(ge=0, le=100, description="progress steps to report")] = 0,
    step_seconds: Annotated[float, Query(ge=0, le=10, description="seconds per step")] = 0.0,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description="deprecated: send the x-user-id header")
    ] = None,
    x_user_id: UserId = None,
) -> Submitted:
    """Enqueue ``worker.test.echo``: a smoke test of the whole path. 429 when ``user_id`` is at its limit."""
    if steps * step_seconds > MAX_TEST_SECONDS:
        raise HTTPException(
            422, f"steps * step_seconds must be at most {MAX_TEST_SECONDS:g} s: a test job holds a thread"
        )
    return _enqueue(request, ECHO, (message, steps, step_seconds), x_user_id or user_id)
