# Build.DDN.RAG — the two commands: `make run` (set up + start the whole stack) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run setup test test-fast protos lint browser-deps clean-data embedder-int8

run: setup ## set up .venv and start the whole stack (SeaweedFS, 4 services, gateway) on loopback
	$(BIN)/rag up

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "Python 3.11 is required ($(PY) not found)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: it installs the local CPU wheel (an unpinned torch pulls a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

browser-deps: ## Debian's Chromium for the browser tests (never `playwright install`)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium (browser tests will be skipped)"; fi; \
	fi

test: setup browser-deps ## the whole test suite (CI runs exactly this)
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: setup ## unit tests only
	$(BIN)/pytest -q -m "not e2e and not browser and not slow" tests/unit

protos: setup ## regenerate the gRPC stubs under ddnrag/ from protos/
	$(BIN)/python scripts/gen_protos.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

embedder-int8: setup ## export the embedder to OpenVINO int8 and run its quality gate (~10 min; bench/embedder.py reports it)
	$(BIN)/python scripts/export_embedder_openvino.py

clean-data: ## delete the local stack's data (SeaweedFS volumes, state, caches)
	rm -rf data
