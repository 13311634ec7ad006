# shopml: `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 3000
DEMO   ?= data/demo
export OMP_WAIT_POLICY ?= PASSIVE
export OPENBLAS_NUM_THREADS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export BENTOML_DO_NOT_TRACK ?= true
# the project's own BentoML model store (champions are packed here by `shopml serve`)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1

.PHONY: run install install-test test soak lint format bench demo-data train serve clean

# Installs are stamped on the lock and pyproject: a second `make` with nothing changed does nothing.
$(VENV)/.stamp-run: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e ".[dask]"
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-run
	$(BIN)/pip install -q -c requirements.lock -e ".[dask,test]"
	touch $@

install: $(VENV)/.stamp-run
install-test: $(VENV)/.stamp-test

$(DEMO)/orders.parquet: | $(VENV)/.stamp-run
	$(BIN)/shopml demo-data --out $(DEMO)

demo-data: $(DEMO)/orders.parquet

train: install demo-data
	$(BIN)/shopml train --experiment experiments/demo.yaml

serve: install
	$(BIN)/shopml serve --host $(HOST) --port $(PORT)

run: install demo-data
	$(BIN)/shopml run --data $(DEMO) --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/pytest -q -m "not slow"

# the long tests (fuzzing at length, killed workers, concurrent trainings) and a 10-minute soak
soak: install-test
	$(BIN)/pytest -q -m slow
	$(BIN)/python -m training.benchmarks.soak --minutes 10

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shopml features training serving tests

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/shopml bench features
	$(BIN)/shopml bench serve
	$(BIN)/shopml bench quality --dataset online-retail
	$(BIN)/shopml bench quality --dataset cdnow

clean:
	rm -rf $(VENV) data/demo .mlflow .bentoml build *.egg-info
