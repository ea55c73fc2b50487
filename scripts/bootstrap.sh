#!/usr/bin/env bash
# Create or refresh .venv with ampfleet (editable) and its dev tools. Idempotent and quick when
# nothing changed: the install is skipped while setup.cfg is the one last installed. Says what
# it does: a first install takes a minute or more, and pip shows what it fetches and installs.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
started=$SECONDS
step() { echo "bootstrap: [$1/3] $2"; }
if [ ! -x .venv/bin/python ]; then
  step 1 "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
else
  step 1 ".venv exists"
fi
stamp=.venv/.ampfleet-installed
want=$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step 2 "upgrading pip"
  .venv/bin/python -m pip install --quiet --upgrade pip
  step 3 "installing ampfleet (editable) and its dev tools into .venv"
  .venv/bin/python -m pip install -e '.[dev]'
  echo "$want" > "$stamp"
  echo "bootstrap: done in $((SECONDS - started)) s"
else
  echo "bootstrap: ampfleet is installed and up to date (setup.cfg, pyproject.toml unchanged)"
fi
