"""The task API of the real service: keys, status, result, Server-Sent Events, cancel, the echo job."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from rosetta_jobs.client import JobClient

from .conftest import WorkerProcess, worker_env
from .support.ops_service import ADMIN_KEY, API_KEY, ServiceProcess, start_service

AUTH = {"x-api-key": API_KEY}
TASK = "00000000-0000-4000-8000-000000000000"

#: Every endpoint behind API_KEY, and every one behind ADMIN_API_KEY.
API_ENDPOINTS = [
    ("GET", f"/tasks/{TASK}"),
    ("GET", f"/tasks/{TASK}/result"),
    ("GET", f"/tasks/{TASK}/events"),
    ("POST", f"/tasks/{TASK}/cancel"),
    ("POST", "/tasks/test?message=hi"),
]
ADMIN_ENDPOINTS = [
    ("GET", "/admin"),
    ("GET", "/admin/static/admin.js"),
    ("GET", "/admin/api/overview"),
    ("GET", "/admin/api/queues/default/dead-letters"),
    ("POST", "/admin/api/queues/default/dead-letters/x/requeue"),
    ("POST", "/admin/api/queues/default/requeue-all"),
    ("DELETE", "/admin/api/queues/default/dead-letters/x"),
    ("GET", f"/admin/api/tasks/{TASK}"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = worker_env(API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY, MAX_ACTIVE_PER_USER="2", ROSETTA_SSE_KEEPALIVE="0.5")
    svc = start_service(env, tmp_path_factory.mktemp("api") / "service.log")
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def keyless_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {k: v for k, v in worker_env().items() if k not in ("API_KEY", "ADMIN_API_KEY")}
    svc = start_service(env, tmp_path_factory.mktemp("keyless") / "service.log")
    yield svc
    svc.stop()


def _request(service: ServiceProcess, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, service.url + path, headers=headers, timeout=10, follow_redirects=False)


def _wait_status(service: ServiceProcess, task_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{service.url}/tasks/{task_id}", headers=AUTH, timeout=5).json()
        if body["status"] == status:
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never became {status}: {body}")


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS + ADMIN_ENDPOINTS)
def test_protected_endpoints_refuse_a_missing_or_wrong_key(
    service: ServiceProcess, redis_dbs: None, method: str, path: str
) -> None:
    # Given an endpoint of the task API or the dashboard
    header = "x-admin-key" if path.startswith("/admin") else "x-api-key"

    # When it is called without a key, then with a wrong one, then with the other service key
    missing = _request(service, method, path, {})
    wrong = _request(service, method, path, {header: "not-the-key"})
    swapped = _request(service, method, path, {header: API_KEY if header == "x-admin-key" else ADMIN_KEY})

    # Then it refuses: 401 without a key, 403 with a wrong one
    assert missing.status_code == 401, missing.text
    assert wrong.status_code == 403, wrong.text
    assert swapped.status_code == 403, swapped.text


def test_a_wrong_session_cookie_is_refused(service: ServiceProcess, redis_dbs: None) -> None:
    # Given forged and expired session cookies
    forged = {"rj_admin": "9999999999." + "0" * 64}
    expired = {"rj_admin": "1000." + "0" * 64}

    # When the dashboard's API is called with them
    for cookies in (forged, expired):
        response = httpx.get(service.url + "/admin/api/overview", cookies=cookies, timeout=5)

        # Then they count as not logged in
        assert response.status_code == 401


@pytest.mark.parametrize(
    "cookie",
    ["\u00b2.abc", "9" * 5000 + ".x", "12345", ".", "99999999999.\u00e9\u00e9", "-5." + "0" * 64, "\u0661\u0662.x"],
    ids=["superscript-digit", "huge-number", "no-dot", "only-dot", "non-ascii-signature", "negative", "arabic-digits"],
)
def test_a_malformed_session_cookie_is_401_not_500(service: ServiceProcess, redis_dbs: None, cookie: str) -> None:
    # Given a malformed rj_admin cookie (sent raw, as a browser or an attacker may)
    headers = {"cookie": f"rj_admin={cookie}".encode()}
    # When the dashboard and its API are called with it
    for path in ("/admin", "/admin/api/overview"):
        response = httpx.get(service.url + path, headers=headers, timeout=5)
        # Then it counts as not logged in: 401, never a server error
        assert response.status_code == 401, (path, response.status_code, response.text[:200])


def _logged_in(service: ServiceProcess) -> httpx.Client:
    browser = httpx.Client(base_url=service.url, timeout=5)
    assert browser.post("/admin/login", data={"key": ADMIN_KEY}).status_code == 303
    return browser


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "http://127.0.0.1:1"}, 403),
        ({"origin": "http://evil.example"}, 403),
        ({"origin": "null"}, 403),
        ({"referer": "http://127.0.0.1:1/page.html"}, 403),
        ({"sec-fetch-site": "same-site", "origin": "SELF"}, 403),
        ({}, 403),
        ({"origin": "SELF"}, 200),
        ({"referer": "SELF/admin"}, 200),
        ({"sec-fetch-site": "same-origin"}, 200),
    ],
    ids=[
        "other-port",
        "other-host",
        "null-origin",
        "other-referer",
        "same-site-port",
        "no-origin",
        "same-origin",
        "same-referer",
        "fetch-same-origin",
    ],
)
def test_a_session_changes_nothing_from_another_origin(
    service: ServiceProcess, redis_dbs: None, headers: dict[str, str], status: int
) -> None:
    # Given a logged-in browser session (the cookie is sent by any page of the same host, any port)
    browser = _logged_in(service)
    try:
        sent = {key: value.replace("SELF", service.url) for key, value in headers.items()}
        # When a state-changing dashboard request comes with the given origin headers
        response = browser.post("/admin/api/queues/default/requeue-all", headers=sent)
        # Then only the dashboard's own origin may change anything; reading stays open to the session
        assert response.status_code == status, response.text
        assert browser.get("/admin/api/overview").status_code == 200
    finally:
        browser.close()


def test_the_admin_key_header_needs_no_origin(service: ServiceProcess, redis_dbs: None) -> None:
    # Given a script with the admin key and no browser headers
    # When it requeues, Then it is served (a page on another origin cannot send this header)
    response = httpx.post(service.url + "/admin/api/queues/default/requeue-all", headers={"x-admin-key": ADMIN_KEY},
                          timeout=5)  # fmt: skip
    assert response.status_code == 200


def test_a_login_form_on_another_origin_is_refused(service: ServiceProcess, redis_dbs: None) -> None:
    # Given the login form posted from a page on another port
    response = httpx.post(service.url + "/admin/login", data={"key": ADMIN_KEY},
                          headers={"origin": "http://127.0.0.1:1"}, timeout=5)  # fmt: skip
    # Then it is refused and sets no cookie
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_the_login_form_sets_a_session_cookie(service: ServiceProcess, redis_dbs: None) -> None:
    # Given the login form
    with httpx.Client(base_url=service.url, timeout=5) as browser:
        assert browser.get("/admin").status_code == 401  # the login page, with 401
        assert 'name="key"' in browser.get("/admin/login").text

        # When a wrong key is posted, then the right one
        wrong = browser.post("/admin/login", data={"key": "nope"})
        right = browser.post("/admin/login", data={"key": ADMIN_KEY})

        # Then the wrong one is refused, the right one redirects with an HttpOnly, SameSite=Strict cookie
        assert wrong.status_code == 403 and "Wrong admin key" in wrong.text
        assert right.status_code == 303 and right.headers["location"] == "/admin"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie

        # And the session opens the dashboard and its API, with a strict content security policy
        page = browser.get("/admin")
        assert page.status_code == 200 and "admin.js" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert browser.get("/admin/api/overview").status_code == 200

        # And logging out ends it
        browser.post("/admin/logout")
        assert browser.get("/admin/api/overview").status_code == 401


def test_health_and_metrics_stay_open(service: ServiceProcess, redis_dbs: None) -> None:
    # Given no key at all
    # When health and metrics are read
    health = httpx.get(service.url + "/health", timeout=5)
    metrics = httpx.get(service.url + "/metrics", timeout=5)

    # Then neither asks for one (health is 503 only because no worker runs)
    assert health.status_code == 503
    assert metrics.status_code == 200 and "rosetta_jobs_redis_up 1.0" in metrics.text


@pytest.mark.parametrize(("method", "path"), API_ENDPOINTS + ADMIN_ENDPOINTS + [("GET", "/admin/login")])
def test_without_configured_keys_everything_is_denied(keyless_service: ServiceProcess, method: str, path: str) -> None:
    # Given a service started without API_KEY and ADMIN_API_KEY
    header = "x-admin-key" if path.startswith("/admin") else "x-api-key"

    # When an endpoint is called with any key, or none
    for headers in ({}, {header: ""}, {header: "anything"}):
        response = _request(keyless_service, method, path, headers)

        # Then it is denied
        assert response.status_code == 403, (headers, response.text)


def test_status_and_result_of_an_echo_job(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a worker
    start_worker()

    # When the test endpoint enqueues an echo job
    submitted = httpx.post(f"{service.url}/tasks/test", params={"message": "hello"}, headers=AUTH, timeout=5)

    # Then it is accepted as queued, and completes
    assert submitted.status_code == 202
    task_id = submitted.json()["task_id"]
    assert submitted.json() == {"task_id": task_id, "state": "PENDING", "status": "queued"}
    status = _wait_status(service, task_id, "completed")
    assert status == client.get_task_status(task_id)  # the same dict as the backend's client
    assert status["result"] == {"message": "hello", "steps": 0}

    # And the result endpoint has the value
    result = httpx.get(f"{service.url}/tasks/{task_id}/result", headers=AUTH, timeout=5).json()
    assert result["ready"] is True and result["successful"] is True
    assert result["result"] == {"message": "hello", "steps": 0}
    assert result["date_done"]


def test_result_of_a_failed_and_of_an_unknown_task(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a job that fails
    start_worker()
    task_id = client.send("tests.fail", ("it broke",))
    _wait_status(service, task_id, "failed")

    # When its result and that of an id nobody knows are read
    failed = httpx.get(f"{service.url}/tasks/{task_id}/result", headers=AUTH, timeout=5).json()
    unknown = httpx.get(f"{service.url}/tasks/{TASK}/result", headers=AUTH, timeout=5).json()

    # Then the failure carries the message and type; the unknown task is not ready (Celery's PENDING)
    assert failed["ready"] is True and failed["successful"] is False
    assert failed["error"] == "it broke" and failed["exc_type"] == "ValueError"
    assert unknown == {
        "task_id": TASK,
        "state": "PENDING",
        "ready": False,
        "successful": False,
        "result": None,
        "error": None,
        "exc_type": None,
        "date_done": None,
    }
    status = httpx.get(f"{service.url}/tasks/{task_id}", headers=AUTH, timeout=5).json()
    assert status == {"task_id": task_id, "state": "FAILURE", "status": "failed", "error": "it broke"}


def _read_events(response: httpx.Response) -> tuple[list[dict[str, Any]], int]:
    """Parse an SSE stream until it closes: the events' data and the number of keep-alive comments."""
    events, comments, data = [], 0, None
    for line in response.iter_lines():
        if line.startswith(":"):
            comments += 1
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        elif line == "" and data is not None:
            events.append(data)
            data = None
    return events, comments


def test_events_stream_every_state_change_then_close(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], redis_dbs: None
) -> None:
    # Given an echo job with three steps, queued while no worker runs
    submitted = httpx.post(
        f"{service.url}/tasks/test",
        params={"message": "sse", "steps": 3, "step_seconds": 0.3},
        headers=AUTH,
        timeout=5,
    )
    task_id = submitted.json()["task_id"]

    # When its event stream is followed and a worker starts
    with httpx.stream("GET", f"{service.url}/tasks/{task_id}/events", headers=AUTH, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # (the worker starts after a quiet spell longer than the 0.5 s keep-alive)
        threading.Timer(1.5, start_worker, kwargs={"wait": False}).start()
        events, comments = _read_events(response)  # returns when the server closes the stream

    # Then every state arrives once, in order, progress with its meta, and the stream ends on SUCCESS
    states = [event["state"] for event in events]
    assert states == ["PENDING", "STARTED", "PROGRESS", "PROGRESS", "PROGRESS", "SUCCESS"], states
    assert [event["meta"]["step"] for event in events if event["state"] == "PROGRESS"] == [1, 2, 3]
    assert events[-1]["result"] == {"message": "sse", "steps": 3}
    # And the quiet wait for the worker to start was filled with keep-alive comments
    assert comments >= 1


def test_events_of_a_finished_task_are_one_event(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a finished job
    start_worker()
    task_id = client.send("worker.test.echo", ("done",))
    _wait_status(service, task_id, "completed")

    # When its stream is opened
    with httpx.stream("GET", f"{service.url}/tasks/{task_id}/events", headers=AUTH, timeout=10) as response:
        events, _ = _read_events(response)

    # Then it sends the final state and closes
    assert [event["state"] for event in events] == ["SUCCESS"]


def test_cancel_of_a_queued_and_of_a_finished_task(
    service: ServiceProcess, start_worker: Callable[..., WorkerProcess], client: JobClient
) -> None:
    # Given a queued job (no worker yet)
    task_id = client.send("worker.test.echo", ("never",))

    # When it is cancelled through the API
    response = httpx.post(f"{service.url}/tasks/{task_id}/cancel", headers=AUTH, timeout=10)

    # Then it is REVOKED, and a worker that starts later does not run it
    assert response.status_code == 200, response.text
    assert response.json() == {"task_id": task_id, "cancelled": True, "state": "REVOKED"}
    start_worker()
    done = client.send("worker.test.echo", ("after",))
    _wait_status(service, done, "completed")  # the worker has been through the queue
    assert client.get_task_status(task_id)["status"] == "cancelled"

    # When a finished task is cancelled
    again = httpx.post(f"{service.url}/tasks/{done}/cancel", headers=AUTH, timeout=10).json()

    # Then nothing changes, and the answer says why
    assert again["cancelled"] is False and again["state"] == "SUCCESS" and again["reason"]
    assert client.get_task_status(done)["status"] == "completed"


def test_the_test_endpoint_enforces_the_per_user_limit(service: ServiceProcess, redis_dbs: None) -> None:
    # Given MAX_ACTIVE_PER_USER=2 and no worker, so submitted jobs stay active
    def submit(user: str) -> httpx.Response:
        params = {"message": "x", "user_id": user}
        return httpx.post(f"{service.url}/tasks/test", params=params, headers=AUTH, timeout=5)

    # When one user submits three jobs and another one
    first, second, third, other = submit("alice"), submit("alice"), submit("alice"), submit("bob")

    # Then the third is refused with 429 and a reason; the other user is not affected
    assert (first.status_code, second.status_code, other.status_code) == (202, 202, 202)
    assert third.status_code == 429
    assert "MAX_ACTIVE_PER_USER" in third.json()["detail"]


def test_bad_parameters_are_422_not_500(service: ServiceProcess, redis_dbs: None) -> None:
    # Given out-of-range parameters
    for params in (
        {"steps": -1},
        {"steps": 1000},
        {"step_seconds": "nan"},
        {"user_id": ""},
        {"steps": 100, "step_seconds": 10},  # a test job may hold a thread for a minute at most
    ):
        # When the test endpoint is called with them
        response = httpx.post(f"{service.url}/tasks/test", params=params, headers=AUTH, timeout=5)

        # Then they are refused as invalid
        assert response.status_code == 422, (params, response.text)
