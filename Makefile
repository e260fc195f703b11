# The two commands a newcomer runs: `make demo` (the main job end to end) and `make test`.
# Each creates .venv when missing and installs what it needs, so each works alone on a fresh clone.
#
# torch is installed first and on its own: `torch==2.13.0` takes the CPU wheel. A GPU user sets TORCH_SPEC and
# TORCH_INDEX, e.g. `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= train,serve,dev
# make test runs on this many pytest-xdist workers, one test module per worker at a time (0: in this process).
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format serve clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@$(PY) serving/vendor.py || echo "warning: the segment dashboard's charts were not vendored (npm missing?); run make vendor"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recstack-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache

# Serve the bundle the demo left behind (Ctrl-C stops it). Unless the environment names its own secrets, it uses (and
# creates when missing) a local development pseudonymisation key and an API key file holding one admin key, printed
# once when created (README, privacy). A deployment mounts its own secrets instead.
BUNDLE ?= outputs/demo/bundle
DEV_KEY ?= outputs/secrets/hmac.key
DEV_API_KEYS ?= outputs/secrets/api_keys.yaml
serve: $(STAMP)
	@if [ -z "$$RECSTACK_HMAC_KEY$$RECSTACK_HMAC_KEY_FILE" ] && [ ! -f $(DEV_KEY) ]; then \
		$(VENV)/bin/recstack-collect keygen $(DEV_KEY) >/dev/null && echo "created $(DEV_KEY) (development key)"; fi
	@if [ -z "$$RECSTACK_API_KEYS_FILE" ] && [ ! -f $(DEV_API_KEYS) ]; then \
		echo "development API key (role admin): $$($(VENV)/bin/recstack-keys create role=admin file=$(DEV_API_KEYS) name=dev 2>/dev/null)"; fi
	RECSTACK_HMAC_KEY_FILE=$${RECSTACK_HMAC_KEY_FILE:-$(if $(RECSTACK_HMAC_KEY),,$(abspath $(DEV_KEY)))} \
	RECSTACK_API_KEYS_FILE=$${RECSTACK_API_KEYS_FILE:-$(abspath $(DEV_API_KEYS))} \
		$(VENV)/bin/recstack-serve bundle=$(BUNDLE)

# The segment dashboard's charting library (Chart.js + its matrix controller for the overlap heat map): pinned npm
# package versions fetched with `npm pack`, checked against their SHA-256 and written to serving/static/vendor/
# (git-ignored; serving/vendor.py). Without it /dashboard/segments says to run this.
.PHONY: vendor
vendor:
	$(PYTHON) serving/vendor.py
