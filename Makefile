# Quick start: `make demo` trains and evaluates a small SSD on synthetic data; `make test` runs the format and lint
# checks, then the tests with the type check beside them (`make lint` runs the three checks alone).
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

# Two pytest-xdist workers: ~6 instead of ~12 min on 2 cores (three took 6 min 49 s against 6 min 2 s: the
# tests are CPU-bound, and a third worker adds its own start). loadscope keeps each module's tests (and its
# module-scoped fixtures: a trained run, an MLflow server) on one worker; a dead worker ends the run.
# TEST_WORKERS=0 runs the tests in this process.
TEST_WORKERS ?= 2

# ruff first (about a second: a finding stops it before the tests), then mypy beside the tests: mypy takes one
# core for ~55 s on a fresh clone, and run before the tests it leaves the other core idle. Its report is shown
# when the tests end; a type error fails `make test` as a failing test does.
test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	@$(BIN)/mypy multibox > .mypy.out 2>&1 & types=$$!; \
	echo "mypy multibox: running beside the tests"; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --max-worker-restart=0; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy multibox:"; cat .mypy.out; rm -f .mypy.out; \
	test $$typed -eq 0 && test $$tests -eq 0

# Everything, including the slow-marked tests, with every journey run through the installed console script.
test-all: $(STAMP)
	MULTIBOX_TEST_CONSOLE=1 $(BIN)/python -m pytest -q -m '' -n $(TEST_WORKERS) --dist loadscope
	bash docker/check_install.sh

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache .mypy.out
