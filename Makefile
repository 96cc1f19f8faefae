# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap everything first.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test bootstrap lint bench clean

bootstrap:
	@bash scripts/bootstrap.sh --servers

demo:
	@bash scripts/bootstrap.sh
	@$(BIN)/cryptoflow demo

test: bootstrap lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy operators connectors dataflows cryptoflow simulator

bench: bootstrap
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
