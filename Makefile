# OpenCoach: `make demo` runs the product on embedded servers, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-browser lint bench clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/opencoach demo

# the browser tests (tests/browser) drive Debian's Chromium through Playwright (no browser download)
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# the two-browser handoff test alone (headless Chromium from the system; screenshots in test-artifacts/browser/)
test-browser: $(STAMP) chromium
	$(BIN)/python -m pytest tests/browser

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/mypy app

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/chat.py
	$(BIN)/python bench/handoff.py
	$(BIN)/python bench/learning.py

clean:
	rm -rf $(VENV) .opencoach
