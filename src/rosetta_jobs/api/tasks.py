"""The task API: status, result, Server-Sent Events, cancel, and the echo job, behind ``x-api-key``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..client import JobClient
from ..contracts import ECHO
from ..errors import BrokerUnavailable, UserLimitExceeded
from ..states import FINAL_STATES, PENDING, SUCCESS, exception_message
from .auth import require_api_key
from .sse import task_events

__all__ = ["MAX_TEST_SECONDS", "router"]

#: Longest echo job the test endpoint enqueues.
MAX_TEST_SECONDS = 60.0

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing x-api-key header"},
    403: {"description": "wrong API key, or API_KEY not set on the service"},
}

router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[Depends(require_api_key)], responses=_AUTH_ERRORS)

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The task id (the message id)")]


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


@router.get("/{task_id}", response_model=TaskStatus, response_model_exclude_none=True, responses={503: {}})
def get_status(task_id: TaskId, request: Request) -> JSONResponse:
    """The task's status, as the backend's ``WorkerClient.get_task_status`` returned it."""
    status = _client(request).get_task_status(task_id)
    return JSONResponse(status, status_code=503 if status.get("status") == "error" else 200)


@router.get("/{task_id}/result", response_model=TaskResult, responses={503: {}})
def get_result(task_id: TaskId, request: Request) -> TaskResult:
    """The task's result once it is final; ``ready`` is false before."""
    try:
        meta = _client(request).store.get(task_id) or {}
    except BrokerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    state = str(meta.get("status", PENDING))
    info = meta.get("result")
    failed = state in FINAL_STATES and state != SUCCESS
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


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one event per state change"}},
)
async def events(task_id: TaskId, request: Request) -> StreamingResponse:
    """Server-Sent Events: the current state, then each change; closed after a final state."""
    ops = request.app.state.ops
    stream = task_events(
        ops.async_results,
        task_id,
        keepalive=ops.settings.sse_keepalive,
        max_seconds=ops.settings.sse_max_seconds,
    )
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
    user_id: Annotated[str | None, Query(min_length=1, max_length=200, description="count against this user")] = None,
) -> Submitted:
    """Enqueue ``worker.test.echo``: a smoke test of the whole path. 429 when ``user_id`` is at its limit."""
    if steps * step_seconds > MAX_TEST_SECONDS:
        raise HTTPException(
            422, f"steps * step_seconds must be at most {MAX_TEST_SECONDS:g} s: a test job holds a thread"
        )
    try:
        task_id = _client(request).submit(ECHO, (message, steps, step_seconds), user_id=user_id)
    except UserLimitExceeded as exc:
        raise HTTPException(429, str(exc)) from exc
    except BrokerUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    except ValueError as exc:  # arguments JSON cannot carry
        raise HTTPException(422, str(exc)) from exc
    return Submitted(task_id=task_id)
