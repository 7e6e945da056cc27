# The two commands: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format bench clean venv-dev

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv-dev: $(BIN)/.installed-dev

# A Redis on the default port, if one answers: then `manage.py notify` from
# another shell reaches the browser live. Without it, the in-process layer.
LOCAL_REDIS = $(shell $(BIN)/python -c "import redis; redis.Redis(socket_connect_timeout=0.3).ping(); print('redis://127.0.0.1:6379/0')" 2>/dev/null)

# Development server with demo data: SQLite unless DATABASE_URL says otherwise.
run: export DJANGO_DEBUG ?= true
run: $(BIN)/.installed
	$(eval export REDIS_URL ?= $(LOCAL_REDIS))
	@echo "channel layer: $${REDIS_URL:-in-process (set REDIS_URL to push from other processes)}"
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# Tests against DATABASE_URL and REDIS_URL when set (CI sets both), else SQLite
# and the in-process layer, with the Redis-only tests skipped.
test: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-test-only-secret-key-not-for-production} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles .test.sqlite3
