# Build.DDN.RAG — the two commands: `make run` (set up + start the whole stack) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run setup test test-slow test-fast soak-stream protos lint dist lint-protos protos-baseline browser-deps monitoring-deps clean-data embedder-int8 images images-deps images-test images-cuda images-sbom images-push

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

monitoring-deps: ## Debian's Prometheus (prometheus, promtool) for `rag up --monitoring` and its tests
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus missing: sudo apt-get install prometheus (monitoring tests will be skipped)"; fi; \
	fi

test: setup browser-deps monitoring-deps ## the test suite, under ~10 min (CI runs this, then test-slow)
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

test-slow: setup browser-deps monitoring-deps ## the slow suite: faults, fuzzing, abuse, Prometheus, stress (tests/conftest.py SLOW_PATHS)
	$(BIN)/pytest -q -p no:cacheprovider -m slow

test-fast: setup ## unit tests only
	$(BIN)/pytest -q -m "not e2e and not browser and not slow" tests/unit

soak-stream: setup ## one >= 20-minute ingestion job watched by `rag ingest` through real disconnects (~30 min): stream_drops_long_jobs in bench/results/reliability.json
	$(BIN)/python bench/reliability.py --long-stream

protos: setup ## regenerate the gRPC stubs under ddnrag/ from protos/
	$(BIN)/python scripts/gen_protos.py

lint: setup lint-protos ## ruff, buf, and the import contracts in pyproject.toml (kernel <- clients <- services, gateway, cli, bench)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	PYTHONPATH=. $(BIN)/lint-imports

# buf lint: STANDARD + COMMENTS rules (buf.yaml). buf breaking: the wire, JSON and generated names
# against the committed baseline image; a deliberate wire change updates the baseline in the same
# commit (`make protos-baseline`, protos/README.md says how).
BUF_BASELINE := protos/buf-baseline.txtpb
lint-protos: setup ## buf lint and buf breaking over protos/
	$(BIN)/buf lint
	$(BIN)/buf build -o -#format=binpb | $(BIN)/buf breaking -#format=binpb --against $(BUF_BASELINE)

protos-baseline: setup ## record the current protos as the wire baseline (a deliberate wire change)
	$(BIN)/buf build --exclude-source-info -o $(BUF_BASELINE)

dist: setup ## the two wheels into dist/: ddnrag (the product) and ddnrag-client (stubs + clients + the kernel parts they use), offline
	$(BIN)/python scripts/build_dist.py --out dist

embedder-int8: setup ## make the embedder's CPU variants (OpenVINO fp32, ONNX Runtime dynamic int8; NNCF static int8 with VNNI/AMX) and run the quality gate on SciFact train and NFCorpus test, cached per CPU (about 30 min on 2 cores; `bench/embedder.py --setup` runs it first, timed apart as setup_s)
	$(BIN)/python scripts/export_embedder_openvino.py

clean-data: ## delete the local stack's data (SeaweedFS volumes, state, caches)
	rm -rf data

# ------------------------------------------------------------------ container images (buildah)
# The same docker/Dockerfile `docker build` uses; here built without a daemon (k8s/README.md,
# "Images"). IMAGE_BASE empty: a Debian bookworm base made once with mmdebstrap and reused.
IMAGE_BASE ?=
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
WHEEL_DIR ?= /opt/wheels
IMAGE_TARGETS ?= storage gateway llm-gateway retriever embedder-cpu
IMAGES := $(BIN)/python docker/images.py

images-deps: ## buildah and mmdebstrap from Debian (installed when run as root, like browser-deps)
	@if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null; \
	  else echo "buildah or mmdebstrap missing: sudo apt-get install buildah mmdebstrap"; exit 1; fi; \
	fi

images: setup images-deps ## build the five CPU images one at a time, then their SBOMs; writes build/images/
	$(IMAGES) build --base "$(IMAGE_BASE)" --ca-bundle "$(CA_BUNDLE)" --wheels "$(WHEEL_DIR)" $(IMAGE_TARGETS)
	$(IMAGES) sbom $(IMAGE_TARGETS)

images-cuda: setup images-deps ## the CUDA embedder (a GPU build machine; PyPI's CUDA torch, ~3 GB)
	$(IMAGES) build --base "$(IMAGE_BASE)" --ca-bundle "$(CA_BUNDLE)" --wheels "" embedder-cuda

images-test: images ## slow: SeaweedFS + every service from its image (buildah run), one cited answer
	DDNRAG_IMAGES_TEST=1 $(BIN)/pytest -q -p no:cacheprovider tests/images

images-sbom: setup ## a CycloneDX SBOM per built image under build/images/sbom/
	$(IMAGES) sbom $(IMAGE_TARGETS)

images-push: setup ## push the built images: make images-push REGISTRY=iad.ocir.io/<namespace>/ddnrag
	@test -n "$(REGISTRY)" || { echo "REGISTRY=<region>.ocir.io/<tenancy-namespace>/ddnrag is required"; exit 1; }
	$(IMAGES) push "$(REGISTRY)" $(IMAGE_TARGETS)
