# `make run` serves the API on the embedded SQLite database (or DATABASE_URL);
# `make test` runs the whole suite on SQLite and PostgreSQL. Both set up .venv first: `run`
# with the service's dependencies alone (requirements.txt), `test` with the test tools too
# (requirements-test.txt) and the npm tools that the OpenAPI tests run
# (tools/package-lock.json).
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check
TOOLS := tools/node_modules/.installed

.PHONY: run test migrate

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt
	$(PIP_INSTALL) -r requirements-test.txt
	touch $@

migrate: $(BIN)/.installed
	$(BIN)/alembic upgrade head

run: migrate
	$(BIN)/flask --app wsgi partitions
	$(BIN)/flask --app wsgi api-key create --all-organizations --name "first key" --if-none
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Without npm (or the registry) the tests that need these tools are skipped; with CI set,
# they fail.
$(TOOLS): tools/package.json tools/package-lock.json
	@if ! command -v npm >/dev/null; then echo "npm not found: no OpenAPI tool tests" >&2; \
	elif (cd tools && npm ci --no-audit --no-fund --loglevel=error); then touch $@; \
	else echo "npm ci failed in tools/: no OpenAPI tool tests" >&2; fi

test: $(BIN)/.installed-test $(TOOLS)
	$(BIN)/pytest
