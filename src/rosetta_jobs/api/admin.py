"""``/admin``: the queue dashboard and its JSON API, behind ``ADMIN_API_KEY``.

The page is static HTML and a small script served from this package (no CDN, no
network), refreshed from ``/admin/api/overview``. A browser logs in through a form that
sets a signed, HttpOnly, SameSite=Strict session cookie; scripts send ``x-admin-key``.
With no ``ADMIN_API_KEY`` configured every ``/admin`` request is refused.
"""

from __future__ import annotations

import html
import time
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from loguru import logger
from pydantic import BaseModel

from ..contracts import CONTRACTS, masked_arguments
from ..history import HistoryFilter
from ..middleware.metrics import read_recent_failures
from ..queues import DeadLetter, is_queue_name
from ..states import FINAL_STATES, PENDING, status_dict
from ..sweeper import read_sweeper
from .auth import ADMIN_COOKIE, SESSION_SECONDS, admin_identity, matches, require_admin, same_origin, session_cookie
from .context import Ops, worker_dict
from .history import read_history

__all__ = ["api", "pages"]

STATIC = FilePath(__file__).parent / "static"
_ASSETS = {"admin.js": "text/javascript; charset=utf-8", "admin.css": "text/css; charset=utf-8"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not logged in and no x-admin-key header"},
    403: {"description": "wrong admin key, or ADMIN_API_KEY not set on the service"},
}

pages = APIRouter(prefix="/admin", include_in_schema=False)
api = APIRouter(prefix="/admin/api", tags=["admin"], dependencies=[Depends(require_admin)], responses=_AUTH_ERRORS)

Queue = Annotated[str, Path(min_length=1, max_length=200, description="a queue name, e.g. default")]
RedisId = Annotated[str, Path(min_length=1, max_length=200, description="the dead letter's redis_id")]


def _ops(request: Request) -> Ops:
    ops: Ops = request.app.state.ops
    return ops


def _page(name: str, request: Request, status: int = 200, **values: str) -> HTMLResponse:
    text = (
        (STATIC / name).read_text(encoding="utf-8").replace("{{root}}", html.escape(request.scope.get("root_path", "")))
    )
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


def _refusal(request: Request, status: int, reason: str) -> HTMLResponse:
    if status == 401:
        return _page("login.html", request, 401, error="")
    return _page("denied.html", request, status, reason=reason)


@pages.get("", response_class=HTMLResponse)
@pages.get("/", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    refusal = admin_identity(request, request.headers.get("x-admin-key"))
    if refusal is not None:
        return _refusal(request, *refusal)
    return _page("admin.html", request, final_states=" ".join(sorted(FINAL_STATES)))


@pages.get("/static/{name}")
def asset(name: str, request: Request) -> Response:
    refusal = admin_identity(request, request.headers.get("x-admin-key"))
    if refusal is not None:
        return Response(refusal[1], status_code=refusal[0], media_type="text/plain")
    if name not in _ASSETS:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response((STATIC / name).read_bytes(), media_type=_ASSETS[name], headers=_HEADERS)


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    if not _ops(request).settings.admin_api_key:
        return _refusal(request, 403, "the dashboard is disabled: ADMIN_API_KEY is not set on the service")
    return _page("login.html", request, error="")


@pages.get("/login.css")
def login_style(request: Request) -> Response:
    if not _ops(request).settings.admin_api_key:
        return Response("the dashboard is disabled", status_code=403, media_type="text/plain")
    return Response((STATIC / "login.css").read_bytes(), media_type="text/css; charset=utf-8", headers=_HEADERS)


@pages.post("/login", response_model=None)
async def login(request: Request) -> Response:
    expected = _ops(request).settings.admin_api_key
    if not expected:
        return _refusal(request, 403, "the dashboard is disabled: ADMIN_API_KEY is not set on the service")
    if same_origin(request) is False:  # a form on another origin must not log this browser in
        return _refusal(request, 403, "cross-origin request refused: log in from the dashboard's own page")
    body = (await request.body())[:4096].decode("utf-8", errors="replace")
    given = (parse_qs(body).get("key") or [""])[0]
    if not given or not matches(given, expected):
        return _page("login.html", request, 403, error="Wrong admin key.")
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/admin", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        session_cookie(expected),
        max_age=SESSION_SECONDS,
        path=f"{root}/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@pages.post("/logout", response_model=None)
def logout(request: Request) -> Response:
    if same_origin(request) is False:
        return _refusal(request, 403, "cross-origin request refused: log out from the dashboard's own page")
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path=f"{root}/admin")
    return response


class Requeued(BaseModel):
    requeued: int


class Deleted(BaseModel):
    deleted: bool


class Purged(BaseModel):
    purged: int
    task_ids: list[str]


def _queue(queue: str) -> str:
    if not is_queue_name(queue):
        raise HTTPException(404, f"no queue named {queue!r}")
    return queue


@api.get("/overview")
def overview(request: Request) -> dict[str, Any]:
    """Everything the dashboard shows: queues, workers, recent failures, dead letters, depth history."""
    ops = _ops(request)
    snapshot = ops.snapshot()
    now = time.time()
    letters = [
        _letter(letter)
        for queue in snapshot.queues
        if queue.dead_lettered
        for letter in ops.inspector.dead_letters(queue.name, limit=50)
    ]
    letters.sort(key=lambda letter: letter["dead_lettered_at"], reverse=True)
    stranded = set(snapshot.unconsumed)
    consumers = {q.name: sum(q.name in w.queues for w in snapshot.running_workers) for q in snapshot.queues}
    return {
        "time": now,
        "queues": [
            dict(q.asdict(), consumers=consumers[q.name], unconsumed=q.name in stranded) for q in snapshot.queues
        ],
        "unconsumed": sorted(stranded),
        "workers": [worker_dict(w, now=now) for w in snapshot.workers],
        "active_tasks": snapshot.active_tasks,
        "reserved_tasks": snapshot.reserved_tasks,
        "failures": read_recent_failures(ops.results, ops.namespace, limit=20),
        "dead_letters": letters[:100],
        "history": read_history(ops),
        "sweeper": read_sweeper(ops.results, ops.namespace),
    }


@api.get("/queues/{queue}/dead-letters")
def dead_letters(
    queue: Queue, request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    """The newest dead letters of a queue, with arguments (SQL as its digest, and ``sql_sha256``), error, traceback."""
    return [_letter(letter) for letter in _ops(request).inspector.dead_letters(_queue(queue), limit=limit)]


def _letter(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the dashboard shows it: the SQL stays in the broker message, the listing has its SHA-256."""
    doc = letter.asdict()
    contract = CONTRACTS.get(letter.actor)
    doc["sql_sha256"] = contract.sql_sha256(letter.args, letter.kwargs) if contract is not None else None
    doc["args"], doc["kwargs"] = masked_arguments(letter.actor, letter.args, letter.kwargs)
    return doc


@api.get("/queues/{queue}/dead-letters/{redis_id}/sql", responses={404: {}})
def reveal_sql(queue: Queue, redis_id: RedisId, request: Request) -> dict[str, Any]:
    """The SQL arguments of one dead letter, in clear, for an operator who must see them; each reveal is logged."""
    letter = _ops(request).inspector.dead_letter(_queue(queue), redis_id)
    if letter is None:
        raise HTTPException(404, "no such dead letter")
    contract = CONTRACTS.get(letter.actor)
    named = contract.arguments(letter.args, letter.kwargs) if contract is not None else {}
    sql = {name: named.get(name) for name in (contract.sql_params if contract is not None else ())}
    digest = contract.sql_sha256(letter.args, letter.kwargs) if contract is not None else None
    client = request.client.host if request.client else "?"
    logger.warning("admin: SQL of dead letter {} (task {}, sql sha256:{}) revealed to {}", redis_id,
                   letter.task_id, (digest or "-")[:12], client)  # fmt: skip
    return {"task_id": letter.task_id, "redis_id": redis_id, "actor": letter.actor, "sql": sql, "sql_sha256": digest}


@api.post("/queues/{queue}/dead-letters/{redis_id}/requeue", response_model=Requeued, responses={404: {}})
def requeue(queue: Queue, redis_id: RedisId, request: Request) -> Requeued:
    """Put one dead letter back on its queue; its task state is cleared so that it runs again."""
    if not _ops(request).inspector.requeue(_queue(queue), redis_id):
        raise HTTPException(404, "no such dead letter")
    return Requeued(requeued=1)


@api.post("/queues/{queue}/requeue-all", response_model=Requeued)
def requeue_all(queue: Queue, request: Request) -> Requeued:
    """Put every dead letter of a queue back on it."""
    return Requeued(requeued=_ops(request).inspector.requeue_all(_queue(queue)))


@api.delete("/queues/{queue}/dead-letters/{redis_id}", response_model=Deleted, responses={404: {}})
def delete(queue: Queue, redis_id: RedisId, request: Request) -> Deleted:
    """Drop a dead letter for good."""
    if not _ops(request).inspector.delete(_queue(queue), redis_id):
        raise HTTPException(404, "no such dead letter")
    return Deleted(deleted=True)


@api.get("/queues/{queue}/jobs")
def waiting_jobs(
    queue: Queue, request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[dict[str, Any]]:
    """The jobs waiting in a queue, in the order workers take them, then the delayed ones; SQL as its digest."""
    jobs = []
    for job in _ops(request).inspector.waiting(_queue(queue), limit=limit):
        doc = job.asdict()
        doc["args"], doc["kwargs"] = masked_arguments(job.actor, job.args, job.kwargs)
        jobs.append(doc)
    return jobs


@api.post("/queues/{queue}/purge", response_model=Purged)
def purge(queue: Queue, request: Request) -> Purged:
    """Drop every job waiting in a queue; each becomes REVOKED, so the backend's pollers stop waiting."""
    purged = _ops(request).inspector.purge(_queue(queue))
    return Purged(purged=len(purged), task_ids=[job.task_id for job in purged])


@api.get("/history")
def history(
    request: Request,
    task_id: Annotated[str | None, Query(max_length=200, description="one task, finished or not")] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(pattern="^(SUCCESS|FAILURE|REVOKED)$")] = None,
    user: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=200)] = None,
    since_seconds: Annotated[
        float | None, Query(gt=0, le=10 * 365 * 86400, description="finished in the last N seconds")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Finished tasks from the task history, newest first; ``task_id`` finds one, still running or not."""
    ops = _ops(request)
    if task_id:
        entry = ops.history.get(task_id)
        if entry is None:
            meta = ops.store.get(task_id)
            queued = ops.store.submitted_queue(task_id)
            if meta is not None or queued is not None:
                meta = meta or {}
                entry = {"task_id": task_id, "actor": meta.get("name"), "queue": meta.get("queue") or queued,
                         "state": meta.get("status") or PENDING, "finished_at": None}  # fmt: skip
        return {"tasks": [entry] if entry else [], "kept": ops.history.count()}
    since = time.time() - since_seconds if since_seconds else None
    where = HistoryFilter(actor=actor or None, state=state, user=user or None, queue=queue or None, since=since)
    return {"tasks": ops.history.recent(where, limit=limit), "kept": ops.history.count()}


@api.get("/tasks/{task_id}")
def task(task_id: Annotated[str, Path(min_length=1, max_length=200)], request: Request) -> dict[str, Any]:
    """A task's status, for the dashboard to follow a requeued job."""
    return status_dict(task_id, _ops(request).store.get(task_id))
