# The README's two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ssdistill-installed
# torch/torchvision are pinned to the builds these machines serve from local disk
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint test-fast data docs docs-serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[teachers,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssdistill distill --config configs/demo/feature.yaml

# one pytest worker per CPU core (pytest-xdist), each with one torch thread; a test file stays on one worker (its
# module fixtures are built once); files go out in collection order, the longest first (tests/conftest.py); the slowest
# tests are listed at the end
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 tests

# the fast tier while changing code: every test but the slow ones (end-to-end trainings under tests/integration/, the
# smoke tier, DDP, the documentation's trainings and site build: the rule is in tests/conftest.py), under 3 minutes on
# 2 cores; `make test` above is the whole suite (what CI runs), before a commit. Each fails when it collects nothing.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10 -m "not slow" tests

# ruff (pinned in the dev extra; rules in pyproject.toml): lint, and the formatting check; `ruff format .` fixes the latter
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# the documentation site (mkdocs.yml, pages in docs/): built into site/, or served on http://127.0.0.1:8000
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

# unpack the full benchmark datasets from ../shared/data into .data/ (needed by configs/q1, configs/q2)
data:
	mkdir -p .data/imagenette2_224 .data/cifar10
	test -d .data/imagenette2_224/train || tar xzf ../shared/data/imagenette2_224_jpeg.tar.gz -C .data/imagenette2_224
	test -d .data/cifar10/train || tar xzf ../shared/data/cifar10_jpeg.tar.gz -C .data/cifar10

clean:
	rm -rf runs site .pytest_cache
