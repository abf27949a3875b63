# The two commands of the README: `make run` and `make test`. Everything they need is here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
PORT ?= 8000
HOST ?= 127.0.0.1
ADMIN_EMAIL ?= $(or $(RAPPORT_ADMIN_EMAIL),admin@example.com)
VENDOR := app/static/vendor

export RAPPORT_ENV ?= dev

.PHONY: run test check bench bench-data load install vendor chromium clean lock mutate

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(PY) -r requirements-dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

install: $(VENV)/.installed

# Browser libraries are pinned in package.json/package-lock.json and copied, never committed.
$(VENDOR)/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	npm run --silent vendor
	@touch $@

vendor: $(VENDOR)/.installed

# Debian's chromium for the browser tests and ffmpeg for video processing (HLS renditions,
# posters, test media); installed when missing and we may (root, apt).
chromium:
	@missing=""; [ -x /usr/bin/chromium ] || missing="chromium"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's$$missing for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing; run 'sudo apt-get install -y$$missing' for the browser and video tests"; \
	  fi; \
	fi

run: export RAPPORT_BASE_URL ?= http://$(HOST):$(PORT)
run: install vendor
	$(PY) -m app migrate
	@for d in courses/*/; do $(PY) -m app publish "$$d" || exit $$?; done
	$(PY) -m app create-user $(ADMIN_EMAIL) --role admin --if-missing
	$(PY) -m app login-link $(ADMIN_EMAIL)
	$(PY) -m app serve --host $(HOST) --port $(PORT)

test: install vendor chromium
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app tests bench

bench: install vendor
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; fi
	$(PY) bench/run.py

# 60 s of mixed buyer traffic from 100 clients against `rapport serve --workers 2` on a
# throwaway PostgreSQL database (LOAD_SECONDS, LOAD_CLIENTS, LOAD_WORKERS, BENCH_PG_URL);
# prints requests, errors, p50/p99 and fails on any error. See README.md, "Load test".
load: install vendor
	$(PY) bench/load.py

# PostgreSQL databases for the dashboard benchmark (100k and 10k buyers, 5M events; minutes):
# `make bench` measures dashboard_p50 only once they exist (BENCH_PG_URL, see bench/README.md).
bench-data: install
	$(PY) bench/data.py

# Mutation testing (mutmut) of checkout and of the engagement score and its threshold crossing,
# against tests/checkout and tests/engagement on SQLite, in a temporary copy of the tree; up
# to 30 minutes, not part of `make test`. Prints each surviving mutant and then
# `mutate killed=K survived=S timeout=T`. MUTATE_ARGS="--only engagement" runs one group.
mutate: install
	$(PY) tests/mutation/run.py $(MUTATE_ARGS)

lock: install
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml --extra dev -o requirements-dev.lock
	$(UV) pip compile --quiet --python-version 3.11 pyproject.toml -o requirements.lock

clean:
	rm -rf $(VENV) node_modules $(VENDOR) var .pytest_cache .mypy_cache .ruff_cache
