# The two commands of the README:
#   make up    set everything up and run the whole pipeline locally (page at http://127.0.0.1:8000/)
#   make test  set everything up and run every check: lint, types, unit and integration tests
.PHONY: up test setup lint typecheck pytest test-clock bench chaos clean

# The instants at which the tests marked `clock` run again (DROPS_TEST_NOW), New York time:
# 14:50 (today's 15:00 slots nearly gone), 02:04 and 02:06 (either side of the daily slide),
# 23:59, the spring-forward day a minute before the gap (the slide moves to 03:00), and the
# fall-back day inside the repeated hour.
CLOCK_INSTANTS = 2026-12-01T19:50:00Z 2026-12-01T07:04:00Z 2026-12-01T07:06:00Z \
	2026-12-02T04:59:00Z 2026-03-08T06:59:00Z 2026-11-01T06:30:00Z

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

test-clock:
	@for t in $(CLOCK_INSTANTS); do \
	  echo "== clock tests at DROPS_TEST_NOW=$$t"; \
	  DROPS_TEST_NOW=$$t .venv/bin/pytest -m clock -q || exit 1; \
	done

test:
	bash scripts/setup.sh --chromium
	$(MAKE) lint typecheck pytest test-clock

bench: setup
	.venv/bin/drops bench

clean:
	-.venv/bin/drops broker stop
	rm -rf .drops
