# The two commands: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format bench soak clean venv-dev browser stack stack-stop stack-status nginx

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv-dev: $(BIN)/.installed-dev

# Development server with demo data: SQLite unless DATABASE_URL says otherwise.
# `demo_ticker` runs beside it (stopped with it) and moves the /live/ board's prices.
# config.devenv writes .env when there is none (debug on, a generated key, the
# Redis on 127.0.0.1:6379 if one answers, DATABASE_URL if set) and never
# changes it after; the settings read it for every command, so `manage.py
# notify` in another shell shares the server's key, database and Redis.
run: $(BIN)/.installed
	$(BIN)/python -m config.devenv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py demo_ticker & ticker=$$!; \
		trap 'kill $$ticker 2>/dev/null' EXIT INT TERM; \
		$(BIN)/python manage.py runserver $(HOST):$(PORT)

# Tests against DATABASE_URL and REDIS_URL when set (CI sets both), else SQLite
# and the in-process layer, with the Redis-only tests skipped.
# The browser tests drive Debian's Chromium, and the stack smoke test logs in
# through nginx; both are installed when missing (needs root and apt-get, as
# on the development and CI machines).
CHROMIUM_PATH ?= /usr/bin/chromium
browser:
	@test -x "$(CHROMIUM_PATH)" || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "install Debian's chromium package (the browser tests need $(CHROMIUM_PATH))"; exit 1; fi; }

# Two pytest processes, each taking whole modules (a module's tests share its
# servers and fixtures): most tests wait on servers, Redis and PostgreSQL, so
# two run in about 60 % of the time of one on two cores. Each process has its
# own test database and its own Redis names. TEST_PROCESSES=0 runs in one.
TEST_PROCESSES ?= 2
test: $(BIN)/.installed-dev browser nginx
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-only-secret-key-not-for-production} \
		$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (docs/benchmarks.md): every workload against daphne, uvicorn, realtime.serve and both
# baselines; needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL; defaults: database
# `bench`, Redis db 5). BENCH_ARGS="fanout --quick" runs one workload at tiny N.
$(BIN)/.installed-bench: $(BIN)/.installed-dev requirements-bench.txt
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

bench: $(BIN)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

# The soak (docs/reliability.md, "Soak"): two workers under a steady chat and
# notification load with reconnects; memory, descriptors and Redis keys over
# time, then every client's ids against the database. Same databases as bench.
# Default 2,000 sockets for 10 minutes; SOAK_ARGS="--sockets 200 --minutes 1" for a short one.
soak: $(BIN)/.installed-bench
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The docker-compose topology on this machine, without Docker: the local
# PostgreSQL and Redis, migrate, two daphne workers (STACK_PORTS) and nginx on
# STACK_PROXY_PORT when it is installed (installed here from Debian's packages
# when we are root). Pids and logs in .stack/; `make stack-stop` drains it.
STACK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/relay_stack
STACK_REDIS_URL ?= redis://127.0.0.1:6379/1
export STACK_PORTS ?= 8101,8102
export STACK_PROXY_PORT ?= 8100

nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
			&& DEBIAN_FRONTEND=noninteractive apt-get update -qq \
			&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } \
		|| echo "nginx unavailable: the stack serves from the workers directly"

stack: $(BIN)/.installed nginx
	DATABASE_URL=$${DATABASE_URL:-$(STACK_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(STACK_REDIS_URL)} \
		$(BIN)/python deploy/stack.py start

stack-stop:
	$(BIN)/python deploy/stack.py stop

stack-status:
	$(BIN)/python deploy/stack.py status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles .test.sqlite3 .stack
