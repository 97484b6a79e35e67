# Quick start: `make demo` trains and evaluates a small SSD on synthetic data; `make test` runs the lint, format and
# type checks (`make lint`), then the tests.
# Both create .venv on first use and install multibox into it (plain pip: it uses the local torch wheels).
PYTHON ?= python3
# The one install path: `make install` here, and the same target in docker/Dockerfile with VENV=/opt/venv,
# EDITABLE= (a regular install; the image holds no source tree) and EXTRAS= (no test tools in the image).
VENV ?= .venv
EXTRAS ?= test
EDITABLE ?= -e
BIN := $(VENV)/bin
STAMP := $(VENV)/.multibox-installed
SPEC := .$(if $(EXTRAS),[$(EXTRAS)])
DEMO_OUT ?= demo_out

.PHONY: install demo lint test test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(EDITABLE) '$(SPEC)'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/multibox demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy multibox

# Two pytest-xdist workers: ~7 instead of ~12 min on 2 cores. loadscope keeps each module's tests (and its
# module-scoped fixtures: a trained run, an MLflow server) on one worker; a dead worker ends the run.
# TEST_WORKERS=0 runs the tests in this process.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --max-worker-restart=0

# Everything, including the slow-marked tests, with every journey run through the installed console script.
test-all: $(STAMP)
	MULTIBOX_TEST_CONSOLE=1 $(BIN)/python -m pytest -q -m '' -n $(TEST_WORKERS) --dist loadscope
	bash docker/check_install.sh

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
