# The front door: `make up` runs the platform, `make test` runs every check. Both create the
# virtual environment (.venv) themselves.
.PHONY: up test lint venv clean

up: venv
	.venv/bin/ampfleet up

test:
	scripts/test.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

venv:
	scripts/bootstrap.sh

clean:
	rm -rf .venv .ampfleet .pytest_cache .mypy_cache .ruff_cache
