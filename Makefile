# The two commands of the README:
#   make up    set everything up and run the whole pipeline locally (page at http://127.0.0.1:8000/)
#   make test  set everything up and run every check: lint, types, unit and integration tests
.PHONY: up test setup lint typecheck pytest bench chaos clean

setup:
	bash scripts/setup.sh

up: setup
	.venv/bin/drops up

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

typecheck:
	.venv/bin/mypy

pytest:
	.venv/bin/pytest

test:
	bash scripts/setup.sh --chromium
	$(MAKE) lint typecheck pytest

bench: setup
	.venv/bin/drops bench

clean:
	-.venv/bin/drops broker stop
	rm -rf .drops
