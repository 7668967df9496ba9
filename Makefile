# Every target sets up its own virtual environment first, so each works on a fresh machine.
# make setup installs the versions in requirements.lock (what the suite last passed on); make lock refreshes them.
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run demo test test-latest lock bench
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile tools/venv.sh $(LOCK)
	tools/venv.sh $(VENV) $(LOCK)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/leantrain sft

demo: $(STAMP)
	$(VENV)/bin/leantrain demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# The suite on the newest releases pyproject.toml allows, in a throwaway venv (.venv-latest); the lock is unchanged.
test-latest:
	tools/newest.sh

# The same, and if the suite passes, those versions become requirements.lock.
lock:
	tools/newest.sh --lock

bench: $(STAMP)
	$(PY) benchmarks/sampling.py
	$(PY) benchmarks/optim_step.py
	$(PY) benchmarks/optim_loss.py
	$(PY) benchmarks/finetune.py
