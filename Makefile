# Stepwell's developer and CI commands. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
# Extra arguments for pytest or the script: make test ARGS="-x -k sandbox",
# make chaos ARGS="--nodes 2"
ARGS ?=
# Settings for commands run by hand: the same local defaults as `make run`.
DEV_ENV := source scripts/services.sh && dev_env &&

.PHONY: help install install-test run test lint bench-sandbox bench bench-peers bench-fairness bench-retention bench-tenants bench-long bench-scale chaos load migrate clean

help: ## List the targets
	@echo "Stepwell: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install Debian packages, the .venv (Python >= 3.12) and Python packages (idempotent)
	@bash scripts/install.sh

install-test: ## install, plus what the tests need (PostgreSQL, Chromium, chromium-driver)
	@WITH_TEST_DEPS=1 bash scripts/install.sh

run: install ## Run web + worker + clock on SQLite with a demo tenant, until Ctrl-C
	@bash scripts/run.sh

test: install-test ## Run the whole test suite on PostgreSQL and Redis (ARGS=... for pytest)
	@bash scripts/test.sh $(ARGS)

lint: install ## ruff check, ruff format --check, and the import contracts (lint-imports)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

bench-sandbox: install ## Benchmark the sandbox (bench/sandbox.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/sandbox.py

bench: install ## Benchmark the engine (bench/engine.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/engine.py

bench-peers: install ## Stepwell against plain Celery and DBOS on the same services (bench/peers.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/peers.py

bench-fairness: install ## Tenant B's start latency under tenant A's flood (bench/fairness.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/fairness.py

bench-retention: install ## Rows per second the retention sweep deletes (bench/retention.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/retention.py $(ARGS)

bench-tenants: install ## Warm jails' memory and start time with 1,000 tenants (bench/tenants.py; ARGS="--tenants 100")
	@$(DEV_ENV) $(VENV)/bin/python bench/tenants.py $(ARGS)
bench-long: install ## A 2,000-step workflow's per-step cost and memory against a 10-step one's (bench/long_runs.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/long_runs.py $(ARGS)
bench-scale: install ## Start, claim, record, list pages and timers on 1M instances vs empty (bench/scale.py; ARGS="--finished 100000 ...")
	@$(DEV_ENV) $(VENV)/bin/python bench/scale.py $(ARGS)

chaos: install ## Chaos run: kill workers, restart Redis and PostgreSQL mid-run (bench/chaos.py; ARGS="--nodes 2": kill whole nodes too)
	@$(DEV_ENV) $(VENV)/bin/python bench/chaos.py $(ARGS)

load: install ## Load: concurrent API clients against one ASGI server (bench/load.py)
	@$(DEV_ENV) $(VENV)/bin/python bench/load.py

migrate: install ## Apply database migrations to the local database
	@$(DEV_ENV) $(VENV)/bin/python manage.py migrate

clean: ## Remove caches and build output (keeps .venv and the local state directory)
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info var/staticfiles
