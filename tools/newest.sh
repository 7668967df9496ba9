#!/usr/bin/env bash
# The suite on the newest releases pyproject.toml allows, in a throwaway venv (.venv-latest).
#
#   tools/newest.sh           report only (`make test-latest`)
#   tools/newest.sh --lock    and, if the suite passes, write those versions to requirements.lock (`make lock`)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-latest
rm -rf "$venv"
tools/venv.sh "$venv"
"$venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/\+[a-z0-9.]+$//' > "$venv/resolved.txt"
echo "newest releases resolved ($venv/resolved.txt); among them:"
grep -iE '^(torch|transformers|accelerate|peft|trl|bitsandbytes|torchao|reasoning.gym)==' "$venv/resolved.txt"
"$venv/bin/ruff" check src tests benchmarks
log="$venv/pytest.log"
if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider 2>&1 | tee "$log"; then
    echo "the suite fails on the newest releases ($log); requirements.lock is unchanged" >&2
    exit 1
fi
if [[ ${1:-} == --lock ]]; then
    {
        echo "# The versions the suite passed on: written by \`make lock\` on $(date -u +%Y-%m-%d)"
        echo "# ($(tail -n 1 "$log" | tr -d '='), $("$venv/bin/python" -VV | head -n 1), $(uname -m))."
        echo "# make setup installs these; pyproject.toml's ranges say what is supported. Edit only via make lock."
        cat "$venv/resolved.txt"
    } > requirements.lock
    echo "requirements.lock written"
fi
