# fleetpulse — `make up` runs the system, `make test` runs the tests.
SHELL := /bin/bash
UV ?= python3 -m uv
RUN := $(UV) run --frozen
PYTEST_WORKERS ?= 3
export UV_SYSTEM_CERTS := 1

.PHONY: bootstrap services up test test-scenarios test-unit test-cluster cluster cluster-down check lint format bench soak mutate lock clean-db

bootstrap:  ## Python toolchain and the locked virtualenv
	@bash scripts/bootstrap.sh

services:  ## PostgreSQL 15 + TimescaleDB and RabbitMQ, started if missing (idempotent)
	@bash scripts/services.sh

up: bootstrap services  ## the whole system on this machine
	$(RUN) fleetpulse db upgrade
	$(RUN) fleetpulse up

test: bootstrap services  ## the suite against real services, with line coverage (scenarios apart)
	$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not scenario" --cov --cov-report=term $(PYTEST_ARGS)

test-scenarios: bootstrap services  ## whole-system scenarios: processes, outages, Prometheus, notebooks
	$(RUN) pytest -n $(PYTEST_WORKERS) --dist loadfile -m scenario $(PYTEST_ARGS)

cluster: services  ## three more RabbitMQ nodes in one cluster on :5701-5703 (idempotent)
	@bash scripts/cluster.sh up

cluster-down:  ## stop the three cluster nodes and remove their data
	@bash scripts/cluster.sh down

test-cluster: bootstrap services cluster  ## faults on the three-node cluster (a few minutes)
	FLEETPULSE_CLUSTER_TESTS=1 $(RUN) pytest tests/cluster $(PYTEST_ARGS)

test-unit: bootstrap
	$(RUN) pytest tests/unit $(PYTEST_ARGS)

check: bootstrap  ## ruff, mypy --strict, import-linter
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	@# the agent and its contract must type-check where desktops are (README "Platforms")
	$(RUN) mypy --platform win32 -p fleetpulse.agent -p fleetpulse.messages
	$(RUN) mypy --platform darwin -p fleetpulse.agent -p fleetpulse.messages
	$(RUN) lint-imports

format:
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: bootstrap services  ## every benchmark but the soak; each prints JSON
	@for b in bench/*.py; do [[ $$b == bench/soak.py ]] && continue; echo "== $$b"; $(RUN) python $$b || exit 1; done

soak: bootstrap services  ## 100k agents at 30 s for 10 minutes (SOAK_ARGS="--agents 20000 --minutes 2")
	$(RUN) python bench/soak.py $(SOAK_ARGS)

mutate: bootstrap  ## mutation testing of the pure core, per module (slow; not in test or CI)
	$(RUN) python mutation/run.py $(MUTATE_ARGS)

lock:
	$(UV) lock

clean-db:  ## drop databases left behind by interrupted test runs
	@psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'fleetpulse_test_%' OR datname LIKE 'fleetpulse_bench_%'" | while read -r d; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE \"$$d\" WITH (FORCE)"; echo "dropped $$d"; done
