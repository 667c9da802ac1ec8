# rosetta-jobs developer commands. `make` alone lists them.
# Everything installs itself: a fresh clone needs only Python 3.11+ and this Makefile.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# Compose v2 (`docker compose`) when the plugin is there, else Debian's docker-compose 1.29: both read compose.yaml.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PROCESSES ?= 2
THREADS ?= 4

.PHONY: help install services demo worker serve test lint format typecheck docs bench chaos chaos-cluster up down image-test clean

help: ## list the commands
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

install: $(VENV)/.installed ## create .venv with the worker, api and dev dependencies (from uv.lock)

services: ## make sure Redis and PostgreSQL run on 127.0.0.1 (starts them if installed)
	@bin/ensure-services

demo: install services ## the main job end to end: seed demo databases, start a worker, run a preview
	$(VENV)/bin/rosetta-jobs demo

worker: install services ## run a worker: rosetta-jobs worker (dramatiq's processes, a dead one replaced)
	$(VENV)/bin/rosetta-jobs worker -p $(PROCESSES) -t $(THREADS)

serve: install services ## run the ops HTTP service (health, metrics, tasks, admin)
	$(VENV)/bin/rosetta-jobs serve

test: install services ## run the test suite against the real Redis, PostgreSQL and DuckDB
	@bin/ensure-tools
	$(VENV)/bin/pytest

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install ## apply ruff formatting and fixes
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

typecheck: install ## mypy (strict) on the package
	$(VENV)/bin/mypy

docs: install ## regenerate docs/configuration.md from the settings class (tests fail when it is stale)
	$(VENV)/bin/rosetta-jobs config-docs --output docs/configuration.md

bench: install services ## latency, throughput, memory and serialiser benchmarks (figures, no assertions)
	$(PY) bench/run.py

chaos: install services ## kill workers and restart Redis under load; print lost/duplicated/recovery figures
	$(PY) bench/chaos.py

chaos-cluster: install services ## as root, minutes: hosts in network namespaces, Sentinel failover, partition, host kill
	$(PY) bench/chaos_cluster.py

up: ## docker compose (v2 or Debian's 1.29): redis, postgres (seeded), worker, ops service, prometheus
	$(COMPOSE) up -d --build

down: ## stop the compose stack and delete its volumes
	$(COMPOSE) down -v

image-test: ## as root, minutes: build the image, run previews through it, bring compose.yaml up healthy
	bin/image-test

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
