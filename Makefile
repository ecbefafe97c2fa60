# `make run` serves the API on the embedded SQLite database (or DATABASE_URL);
# `make test` runs the whole suite on SQLite and PostgreSQL. Both set up .venv first: `run`
# with the service's dependencies alone (requirements.txt), `test` with the test tools too
# (requirements-test.txt).
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

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
	$(BIN)/flask --app wsgi api-key create --all-organizations --name "first key" --if-none
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(BIN)/.installed-test
	$(BIN)/pytest
