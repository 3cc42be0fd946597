# Everything the project needs is installed by these targets, from PyPI, into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo run test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q bot scheduler messages
	touch $(STAMP)

setup: $(STAMP)

## demo: offline demo (sandbox Bot API, scripted patient, simulated clock)
demo: $(STAMP)
	$(BIN)/aftercare demo

## run: the real bot (needs .env with AFTERCARE_BOT_TOKEN); offline demo without a token
run: $(STAMP)
	$(BIN)/aftercare start

## test: lint, types and the whole test suite (PostgreSQL tests when AFTERCARE_TEST_PG_URL is set,
## browser tests when /usr/bin/chromium is there)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q
	@if [ -n "$$AFTERCARE_TEST_PG_URL" ]; then \
		echo "PostgreSQL tests: ran (AFTERCARE_TEST_PG_URL is set)"; \
	else \
		echo "PostgreSQL tests: skipped; to run them, set AFTERCARE_TEST_PG_URL to a server where the user may create databases (.ci/run installs and starts one)"; \
	fi
	@if [ -x /usr/bin/chromium ]; then \
		echo "Browser tests: ran (/usr/bin/chromium)"; \
	else \
		echo "Browser tests: skipped; to run them, install Debian's chromium (apt-get install chromium; .ci/run does)"; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
