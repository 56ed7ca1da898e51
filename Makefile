# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-props test-slow test-cluster bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[ray,export,dev]" --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python jobs/search_and_train.py

# the modules on TEST_WORKERS parallel pytest-xdist workers, each module (and its Ray session) on one worker; most
# of a module's time is Ray and Ray Train starting and waiting, so 3 workers overlap it on 2 cores
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# the property tests (Hypothesis) drawing new examples each run; `make test` draws the same ones every time
test-props: $(STAMP)
	$(BIN)/python -m pytest -q -m "hypothesis and not slow and not cluster" --hypothesis-profile=explore

# the second and later Ray Train runs of a path the default suite already runs once (a worker killed and restarted,
# faults at a checkpoint, two DDP workers, resuming supernets): CI runs them after `make test`
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Multi-node Ray clusters on loopback (docs/cluster.md): simulated clusters, the autoscaler, MLflow behind a login,
# and a real ray up/submit/down over ssh to 127.0.0.1 (as root it installs openssh-server, rsync, netcat-openbsd
# and acl from Debian's packages when they are missing). ~15 min on 2 busy cores.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -m cluster

bench: $(STAMP)
	for b in benchmarks/*_bench.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
