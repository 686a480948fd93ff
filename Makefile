# treeserve: two set-up commands, `make demo` and `make test`. Each creates or refreshes the
# virtual environments it needs; a stamp keyed on the requirement files makes a second run a no-op.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TVENV := .venv-triton
AVENV := .venv-airflow
APP_STAMP := $(VENV)/.stamp-$(shell cat requirements/app.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
TRITON_STAMP := $(TVENV)/.stamp-$(shell cat requirements/triton.lock 2>/dev/null | sha256sum | cut -c1-16)
AIRFLOW_STAMP := $(AVENV)/.stamp-$(shell cat requirements/airflow.lock 2>/dev/null | sha256sum | cut -c1-16)
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv venv-triton venv-airflow airflow-lock demo test test-unit test-integration lint bench bench-tools docs clean

venv: $(APP_STAMP)
venv-triton: $(TRITON_STAMP)
venv-airflow: $(AIRFLOW_STAMP)

$(APP_STAMP): requirements/app.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/python -m pip install -q -r requirements/app.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*; touch $@

$(TRITON_STAMP): requirements/triton.lock
	@test -x $(TVENV)/bin/python || $(PYTHON) -m venv $(TVENV)
	$(TVENV)/bin/python -m pip install -q --upgrade pip==26.3
	$(TVENV)/bin/python -m pip install -q -r requirements/triton.lock
	@rm -f $(TVENV)/.stamp-*; touch $@

# Airflow (deploy/airflow/dags) has its own environment: its pins conflict with the application's.
$(AIRFLOW_STAMP): requirements/airflow.lock
	@test -x $(AVENV)/bin/python || $(PYTHON) -m venv $(AVENV)
	$(AVENV)/bin/python -m pip install -q --upgrade pip==26.3
	$(AVENV)/bin/python -m pip install -q -r requirements/airflow.lock
	@rm -f $(AVENV)/.stamp-*; touch $@

# Re-resolve requirements/airflow.in into requirements/airflow.lock in a scratch environment.
airflow-lock:
	rm -rf $(AVENV)-lock && $(PYTHON) -m venv $(AVENV)-lock
	$(AVENV)-lock/bin/python -m pip install -q --upgrade pip==26.3
	$(AVENV)-lock/bin/python -m pip install -q -r requirements/airflow.in
	$(AVENV)-lock/bin/python -m pip freeze > requirements/airflow.lock
	rm -rf $(AVENV)-lock

demo: venv venv-triton
	$(BIN)/treeserve demo

test: venv venv-triton venv-airflow
	$(BIN)/python -m pytest tests -x -q

test-unit: venv
	$(BIN)/python -m pytest tests/unit -q

test-integration: venv venv-triton venv-airflow
	$(BIN)/python -m pytest tests/integration -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy treeserve treeserve_app exporter gateway training drift loadtest

bench: venv venv-triton bench-tools
	$(BIN)/python -m loadtest.bench

# The load generators the headline figures need: installed when missing (Debian, as root), else named.
bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk and nghttp2-client (h2load)"; \
	    apt-get install -y -q wrk nghttp2-client >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk nghttp2-client >/dev/null; }; \
	  else echo "error: make bench needs wrk and h2load: sudo apt-get install -y wrk nghttp2-client" >&2; exit 1; fi; }

# The generated reference pages (CLI, settings, OpenAPI) under docs/reference/.
docs: venv
	$(BIN)/python -m treeserve_app.docgen

clean:
	rm -rf var reports model_repository/*/ .pytest_cache .mypy_cache .ruff_cache
