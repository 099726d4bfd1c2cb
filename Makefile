# certpull — every target does its own set-up (scripts/setup.sh is idempotent).
PY := .venv/bin/python
SETUP := scripts/setup.sh

.PHONY: demo test test-fast lint typecheck rpm lambda bench clean setup

setup:
	@bash $(SETUP)

## demo: local end-to-end demo (moto server, ACM PCA, a secret, a real httpd, install + rotation)
demo: setup
	$(PY) scripts/demo.py

## test: the whole suite (lint, types, Python 3.9 check, unit, integration, packaging)
test: setup
	bash scripts/test.sh

## test-fast: unit tests only
test-fast: setup
	$(PY) -m pytest tests/unit -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/mypy

rpm: setup
	bash packaging/build-rpm.sh

lambda: setup
	bash packaging/lambda/build.sh

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
