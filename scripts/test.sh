#!/usr/bin/env bash
# Every check, from a fresh clone: virtualenv, services, lint, types, tests on SQLite and on the
# real MariaDB. Extra arguments go to pytest (e.g. scripts/test.sh -k devices).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/services.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest (SQLite and MariaDB)"
set +e
# --require-mariadb: a MariaDB that cannot be reached fails the run instead of skipping.
.venv/bin/python -m pytest --require-mariadb "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
