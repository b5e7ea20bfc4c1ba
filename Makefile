# Everything installs inside this clone: .tools (uv), .venv (the project), .cache (uv's cache).
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.8
VENV := .venv
UV := .tools/bin/uv
export UV_CACHE_DIR := $(CURDIR)/.cache/uv

.PHONY: venv lock demo demo-stop test benchmarks clean

venv: $(VENV)/.synced

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (see README.md)" >&2; exit 1; }
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The lock pins every package; the .pth puts this checkout (ml/, operators/, demo/) on the path.
$(VENV)/.synced: requirements.lock $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(VENV)/bin/python requirements.lock
	echo "$(CURDIR)" > "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ml_pipelines_checkout.pth"
	touch $@

# Regenerate the lock after editing requirements.txt (or ml/requirements.txt).
lock: $(UV)
	$(UV) pip compile --quiet requirements.txt --python-version 3.11 -o requirements.lock
	$(UV) pip compile --quiet ml/requirements.txt --python-version 3.11 -c requirements.lock -o ml/requirements.lock

demo: venv
	bash demo/run_demo.sh

test: venv
	$(VENV)/bin/python -m pytest tests

# extract.py needs the local PostgreSQL; serving.py needs wrk (apt-get install wrk).
benchmarks: venv
	$(VENV)/bin/python benchmarks/dag_parse.py
	$(VENV)/bin/python benchmarks/extract.py
	$(VENV)/bin/python benchmarks/serving.py

# `make demo` leaves its model server running (that is the point); this stops it.
demo-stop:
	@[ ! -f .demo/endpoints/demo-local/state.json ] || $(VENV)/bin/python -c "from operators.deploy_targets.local import LocalServerTarget as T; T('demo-local', state_dir='.demo/endpoints/demo-local').stop()"

clean: demo-stop
	rm -rf .demo .pytest_cache
