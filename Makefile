# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap everything first.
# `make` alone (or `make help`) lists the targets: each is documented by its `## ` comment.
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist; a file's tests stay on one); 0 runs them in this process.
TEST_WORKERS ?= 3

.DEFAULT_GOAL := help
.PHONY: help demo test bootstrap lint web bench soak clean

help: ## list the targets (this text)
	@echo "cryptoflow: make TARGET"
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## (.*)/  \1\t\2/' | expand -t 14

demo: web ## the whole pipeline locally (Redis, exchange simulator, SMTP sink, every dataflow); live table until Ctrl-C
	@bash scripts/bootstrap.sh
	@$(BIN)/cryptoflow demo

test: bootstrap lint web ## bootstrap, lint, build web/, run the suite on TEST_WORKERS processes (PYTEST_ARGS="-k x")
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bootstrap: ## create .venv with the dev extras, and install redis-server, victoria-metrics, influxdb (as root)
	@bash scripts/bootstrap.sh --servers

lint: ## ruff and mypy (strict on operators/)
	$(BIN)/ruff check .
	$(BIN)/mypy operators connectors dataflows cryptoflow simulator service

# The browser monitor (web/): rebuilt with Debian's node/npm only when web/dist is older than a source file.
WEB_SRC := web/package.json web/package-lock.json web/index.html web/vite.config.js \
	$(shell find web/src web/public -type f 2>/dev/null)

web: web/dist/index.html ## build the browser monitor into web/dist (npm ci + vite build) when its sources changed

web/dist/index.html: $(WEB_SRC)
	@command -v npm >/dev/null || bash scripts/bootstrap.sh --node
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build
	@touch $@

bench: bootstrap ## run every benchmarks/bench_*.py but the soak (results: benchmarks/RESULTS.md)
	@for b in benchmarks/bench_*.py; do [ $$b = benchmarks/bench_soak.py ] && continue; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

soak: bootstrap ## the collector 30 min at 10 pairs x 100 updates/s, RSS sampled; prints the slope after 5 min
	@$(BIN)/python benchmarks/bench_soak.py --minutes 30

clean: ## remove .venv and the tool caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
