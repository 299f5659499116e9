# The two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
CODE  := edge_cloud services platforms
LINTED := $(CODE) tests scripts bench

.DEFAULT_GOAL := setup
.PHONY: setup proto run test cov lint fmt bench clean distclean

setup:
	@bash scripts/setup.sh

proto: setup
	@$(PY) scripts/gen_protos.py

run: setup
	@$(BIN)/edge local up --demo docker/demo/world.yaml

lint: setup
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

test: lint
	$(BIN)/pytest -q

# Coverage tracing slows every in-process test: a target of its own keeps `make test` in budget.
cov: lint
	$(BIN)/pytest --cov --cov-report=term:skip-covered -q

bench: setup
	@set -e; for script in bench/[!_]*.py; do \
		[ -e "$$script" ] || continue; echo "== $$script"; $(PY) "$$script"; done

clean:
	rm -rf gen build .run .mypy_cache .ruff_cache .pytest_cache .coverage htmlcov
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
