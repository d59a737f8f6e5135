# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint tools

$(BIN)/sagad: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/sagad
	$(BIN)/sagad migrate
	$(BIN)/sagad demo

# promtool (Debian's prometheus package) checks the alert rules and the compose Prometheus config;
# pgbouncer (Debian's, 1.18) is the pooler in transaction mode that tests/pooler runs the daemon through.
tools:
	@command -v promtool >/dev/null || { \
		[ "$$(id -u)" = 0 ] || { echo "install Debian's prometheus package (it ships promtool)"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { \
		[ "$$(id -u)" = 0 ] || { echo "install Debian's pgbouncer package"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; }

# mypy names modules after folders: it checks the package through a link named `sagad`.
lint: $(BIN)/sagad
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p .venv/typecheck && ln -sfn "$(CURDIR)" .venv/typecheck/sagad
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: $(BIN)/sagad tools lint
	$(BIN)/python -m pytest
