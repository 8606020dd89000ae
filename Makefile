# MoodLens: `make run` sets up and serves the app; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Each open Socket.IO connection holds a gunicorn thread: THREADS >= clients per process.
THREADS ?= 64

.PHONY: run run-eventlet setup setup-dev setup-tools system-test-deps test test-fast audit bench load lock compose-env clean

# Every package at the version in constraints.txt (the requirements' own dependencies too, and pip itself).
$(VENV)/.installed: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip -c constraints.txt
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt constraints.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

setup-dev: setup-tools system-test-deps

## The Python test and benchmark tools, without the system packages the tests drive.
setup-tools: setup $(VENV)/.installed-dev

system-test-deps:
	bash scripts/install-test-system-deps.sh

## Serve on http://$(HOST):$(PORT) with the bundled model and SQLite (production server, threading mode).
run: setup
	$(VENV)/bin/gunicorn -c gunicorn.conf.py -k gthread -w 1 --threads $(THREADS) -b $(HOST):$(PORT) --access-logfile - wsgi:app

## The same app under eventlet (the design card's async mode), through socketio.run.
run-eventlet: setup
	ASYNC_MODE=eventlet HOST=$(HOST) PORT=$(PORT) $(PY) -m app

## Every test: unit, API, Socket.IO, training tools, PostgreSQL, Redis, nginx, real browser; then the audit.
test: setup-dev
	$(PY) -m pytest
	$(PY) scripts/audit.py

## Known vulnerabilities in the installed pinned packages (pip-audit; AUDIT_STRICT=1 fails when offline).
audit: setup-tools
	$(PY) scripts/audit.py

## Everything but the real-browser tests.
test-fast: setup-dev
	$(PY) -m pytest -m "not browser"

bench: setup-tools
	$(PY) -m benchmarks.pipeline --op-threads 1  # one thread per op, as the server runs (TF_INTRA_OP_THREADS)
	$(PY) -m benchmarks.socket_roundtrip
	$(PY) -m benchmarks.flood

## Soak: 8 clients at 10 frames/s for 10 minutes; throughput, latency, drops, errors, server memory.
load: setup-tools
	$(PY) -m benchmarks.load --clients 8 --fps 10 --seconds 600 --warmup 60 --sample-every 15

## Rewrite constraints.txt after changing requirements*.txt: resolve them afresh in a scratch venv, pin everything.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	{ grep '^#' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --all | grep -v '^setuptools==\|^wheel=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

## docker compose's secrets, once: a .env (read by compose) with a random SECRET_KEY and POSTGRES_PASSWORD.
## Never overwritten: the database volume keeps the first password, and a new SECRET_KEY logs every teacher out.
ENV_FILE ?= .env
compose-env:
	@if [ -e $(ENV_FILE) ]; then echo "$(ENV_FILE) exists: kept (its secrets are the ones the database volume and the sessions use)"; \
	else (umask 077; printf 'SECRET_KEY=%s\nPOSTGRES_PASSWORD=%s\n' "$$(openssl rand -hex 32)" "$$(openssl rand -hex 16)" > $(ENV_FILE)) \
	  && echo "wrote $(ENV_FILE): keep it, it holds the deployment's secrets"; fi

clean:
	rm -rf $(VENV) node_modules .pytest_cache
