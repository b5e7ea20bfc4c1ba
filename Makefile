# Everything installs inside this clone: .tools (uv), .venv (the project), .cache (uv's cache).
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.8
VENV := .venv
UV := .tools/bin/uv
export UV_CACHE_DIR := $(CURDIR)/.cache/uv
# Compile every installed module once at install (~1 min): where bytecode is never written
# (PYTHONDONTWRITEBYTECODE, read-only installs) each process otherwise compiles what it imports
# again, and a model server's first start took 7 s instead of 2.3 s on a fresh clone.
export UV_COMPILE_BYTECODE := 1

PORT ?= 8080
# make airflow WORKERS=N: the CeleryExecutor with N workers (and a training worker) on the local Redis
WORKERS ?= 0

.PHONY: venv clients-venv lock demo demo-stop check-specs model-dags test load-test benchmarks clean airflow airflow-stop stack stack-stop container-tools

venv: $(VENV)/.synced

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (see README.md)" >&2; exit 1; }
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The lock pins every package; the .pth puts this checkout (ml/, operators/, demo/) on the path;
# the example team model (examples/keyword_moderation, numpy only) is installed as a team installs theirs.
# mysqlclient (the mysql provider's driver) compiles against MariaDB's client library: installed
# here with pkg-config when missing and apt-get can (root on Debian/Ubuntu).
$(VENV)/.synced: requirements.lock $(UV) examples/keyword_moderation/pyproject.toml
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libmariadb-dev and pkg-config (mysqlclient builds against them)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libmariadb-dev pkg-config >/dev/null; \
	  else echo "error: mysqlclient needs MariaDB's or MySQL's client headers: apt-get install libmariadb-dev pkg-config" >&2; exit 1; fi; }
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --python $(VENV)/bin/python requirements.lock
	$(UV) pip install --quiet --python $(VENV)/bin/python --no-deps -e examples/keyword_moderation
	echo "$(CURDIR)" > "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ml_pipelines_checkout.pth"
	$(VENV)/bin/python -m ml.tree_engine  # the compiled tree engine's kernel into numba's cache (~5 s)
	touch $@

# The Open Inference Protocol's third-party clients (tritonclient, kserve), unmodified, in a
# virtualenv of their own: they need protobuf < 7, the Google providers protobuf 7 (~10 s with uv).
CLIENTS_VENV := .venv-clients
clients-venv: $(CLIENTS_VENV)/.synced
$(CLIENTS_VENV)/.synced: tests/protocol_clients/requirements.lock $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(CLIENTS_VENV)
	$(UV) pip sync --quiet --python $(CLIENTS_VENV)/bin/python tests/protocol_clients/requirements.lock
	touch $@

# Regenerate the locks after editing requirements.txt (or ml/requirements.txt, or the protocol clients').
lock: $(UV)
	$(UV) pip compile --quiet requirements.txt --python-version 3.11 -o requirements.lock
	$(UV) pip compile --quiet ml/requirements.txt --python-version 3.11 -c requirements.lock -o ml/requirements.lock
	$(UV) pip compile --quiet tests/protocol_clients/requirements.txt --python-version 3.11 -o tests/protocol_clients/requirements.lock

demo: venv
	bash demo/run_demo.sh

# The container tests start their own engine (demo/container_engine.py); this installs Debian's
# engines and debootstrap, and the chromium the UI plugin's browser test drives, when they are
# missing and apt-get can (root on Debian/Ubuntu).
CONTAINER_TOOLS := dockerd:docker.io containerd:containerd runc:runc docker-compose:docker-compose \
                   debootstrap:debootstrap podman:podman catatonit:catatonit iptables:iptables chromium:chromium
container-tools:
	@missing=""; for pair in $(CONTAINER_TOOLS); do command -v $${pair%%:*} >/dev/null || [ -x /usr/libexec/podman/$${pair%%:*} ] \
	  || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing container tools:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: missing$$missing; the container tests will say what is needed" >&2; fi; fi

# Branch coverage of ml/ and operators/ in every process the tests start ([tool.coverage] in
# pyproject.toml); below fail_under the target fails even when every test passed. Two pytest-xdist
# workers, a test file each at a time in file order, so the long container and integration files
# start first (most of their time is waiting on Airflow and servers), then the tests marked
# serial alone (they assert latencies), adding to the same coverage data. The slowest tests are listed: the suite must stay well under CI's 90 minutes.
TEST_WORKERS ?= 2
test: venv clients-venv container-tools
	rm -f .coverage .coverage.*
	$(VENV)/bin/python -m pytest tests -m "not serial" -n $(TEST_WORKERS) --no-loadscope-reorder \
	  --cov --cov-report= --cov-fail-under=0 --durations=25
	$(VENV)/bin/python -m pytest tests -m serial --cov --cov-append --cov-report=term-missing:skip-covered --durations=5

# Every model spec in models/: each file's errors (file, field, what to give), and a spec without
# its DAG file (or a DAG file without its spec); exit 1 on any.
check-specs: venv
	$(VENV)/bin/python -m operators.specs.model_spec models/
	$(VENV)/bin/python -m operators.specs.dag_factory --check

# The DAG file of each new spec: dags/models/<name>.py, three lines naming its spec.
model-dags: venv
	$(VENV)/bin/python -m operators.specs.dag_factory

# The SLO report: Locust (tests/load/) against a real ml.serve; prints the valid rate and
# p50/p95/p99 and exits 1 when tests/load/slo.toml's objective is not held.
load-test: venv
	$(VENV)/bin/python -m tests.load

# extract.py needs the local PostgreSQL and MariaDB; serving.py needs wrk (apt-get install wrk).
benchmarks: venv
	$(VENV)/bin/python benchmarks/dag_parse.py
	$(VENV)/bin/python benchmarks/extract.py
	$(VENV)/bin/python benchmarks/extract.py --source mariadb
	$(VENV)/bin/python benchmarks/serving.py
	$(VENV)/bin/python benchmarks/serving_profile.py
	$(VENV)/bin/python benchmarks/pipeline.py
	$(VENV)/bin/python benchmarks/batch_scoring.py
	$(VENV)/bin/python benchmarks/text_training.py

# `make demo` leaves its model servers running (that is the point); this stops them.
demo-stop:
	@for e in demo-local demo-production demo-text demo-text-production; do [ ! -f .demo/endpoints/$$e/state.json ] || $(VENV)/bin/python -c "from operators.deploy.targets.local import LocalServerTarget as T; T('$$e', state_dir='.demo/endpoints/$$e').stop()"; done

clean: airflow-stop demo-stop
	rm -rf .demo .pytest_cache

# A real local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor) on the
# demo's embedded defaults, in .demo/. Prints the UI's URL, user and password. WORKERS=N: the
# CeleryExecutor with N workers and a training worker on the local Redis, PostgreSQL metadata.
airflow: venv
	$(VENV)/bin/python -m demo.local_airflow start --port $(PORT) --workers $(WORKERS)

airflow-stop:
	@[ ! -x $(VENV)/bin/python ] || $(VENV)/bin/python -m demo.local_airflow stop

# The compose stack (docker-compose.yaml) from this repository's images: CeleryExecutor, Redis,
# WORKERS=N replicas of airflow-worker (at least one) and the training worker.
stack: venv container-tools
	WORKERS=$(WORKERS) $(VENV)/bin/python -m demo.stack up

stack-stop:
	@[ ! -x $(VENV)/bin/python ] || $(VENV)/bin/python -m demo.stack down
