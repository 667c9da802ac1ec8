# rosetta-jobs: one image for the worker (the default command) and the ops service
# (`rosetta-jobs serve`). Multi-stage: uv installs the locked dependencies into /app/.venv in the
# build stage; the runtime stage gets only that venv, and runs as a non-root user.
#
# The DuckDB postgres extension comes from the wheel duckdb-extension-postgres-scanner (the same
# version as duckdb, pinned in pyproject.toml and uv.lock) and is loaded from its path: a container
# downloads nothing when it starts, and works air-gapped.
#
# Linted with hadolint in tests/test_deploy.py; built and run for real by `make image-test` (bin/image-test),
# on Debian's docker.io and docker-compose 1.29: see docs/operations.md for what it printed last.
#
# The build backend (hatchling, which builds the project's own wheel outside uv.lock) is pinned to one
# version in pyproject.toml's [build-system], so the build fetches nothing unpinned.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, so that a change to the code does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra worker --extra api --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --extra worker --extra api --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 rosetta \
 && useradd --system --uid 10001 --gid rosetta --home-dir /app --no-create-home --shell /usr/sbin/nologin rosetta
COPY --from=build /app/.venv /app/.venv
# DuckDB spills to DUCKDB_TEMP_DIRECTORY, set explicitly: its own default is ./.tmp, in /app, which
# belongs to root (a preview that spilled failed with "Permission denied"). /tmp is the container's
# writable layer; mount a volume there for big spills.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    DUCKDB_TEMP_DIRECTORY=/tmp/rosetta-jobs-duckdb \
    WORKER_PROCESSES=2 \
    WORKER_THREADS=4
# The working directory is where a mounted .env would be read from.
WORKDIR /app
USER 10001:10001
EXPOSE 8002
# Healthy while every worker process of this container sends heartbeats (rosetta-jobs check reads
# them from RESULT_BACKEND_URL); the ops service's container overrides it (compose.yaml).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["sh", "-c", "exec rosetta-jobs check --min-processes \"$WORKER_PROCESSES\""]
# rosetta-jobs worker: Dramatiq's worker processes under a master that replaces one that dies (an OOM
# kill) within seconds. exec: that master is the process that receives SIGTERM and stops them gracefully.
CMD ["sh", "-c", "exec rosetta-jobs worker --processes \"$WORKER_PROCESSES\" --threads \"$WORKER_THREADS\""]
