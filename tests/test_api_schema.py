"""schemathesis against the real service's OpenAPI schema: no input makes it answer 5xx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from .conftest import ROOT, WorkerProcess, flush_redis_dbs, worker_env
from .support.ops_service import ADMIN_KEY, API_KEY, ServiceProcess, start_service

HEADERS = {"x-api-key": API_KEY, "x-admin-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service with both keys, and one worker so that /health can be healthy."""
    flush_redis_dbs()
    logs = tmp_path_factory.mktemp("schema")
    svc = start_service(worker_env(API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY), logs / "service.log")
    # Generated echo jobs may take up to a minute: at the end they are cut short, not waited for.
    args = [
        sys.executable,
        "-m",
        "dramatiq",
        "rosetta_jobs.actors",
        "-p",
        "1",
        "-t",
        "2",
        "--worker-shutdown-timeout",
        "500",
    ]
    with open(logs / "worker.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    worker = WorkerProcess(proc, logs / "worker.log", args)
    try:
        worker.wait_ready(1)
        yield svc
    finally:
        worker.stop()
        svc.stop()
        flush_redis_dbs()


def test_no_input_makes_the_service_fail(service: ServiceProcess) -> None:
    # Given the service's OpenAPI schema (an SSE stream of a task that never finishes stays open by design)
    api_schema = schemathesis.openapi.from_url(service.url + "/openapi.json").exclude(path_regex=r"/events$")
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10

    # When every operation gets generated requests, with valid keys
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=service.url, headers=HEADERS, checks=[not_a_server_error], timeout=10)

        try:
            call()
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")

    # Then none of them ever answered with a server error
    assert not failures, "\n\n".join(failures)
