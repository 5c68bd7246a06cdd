# OpenCoach: `make demo` runs the product on embedded servers, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-browser lint bench clean chromium

# llama.cpp is compiled for this CPU (-march=native), but its AMX matrix kernels crash (SIGSEGV in
# ggml_backend_amx_mul_mat, seen with llama-cpp-python 0.3.36 on a Xeon with AMX): build without AMX
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	CMAKE_ARGS='-DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"' $(BIN)/python -m pip install --quiet -e ".[dev]"
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

# ESLint for the browser scripts in static/ (eslint.config.js), installed from package-lock.json
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund --silent

lint: $(STAMP) node_modules/.package-lock.json
	npx --no-install eslint static
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
	rm -rf $(VENV) .opencoach node_modules
