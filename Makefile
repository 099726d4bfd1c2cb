# Convenience targets; ./dev does the work (and its own set-up) so a machine without make works too.
.PHONY: demo test rpm lambda bench setup lint clean
demo test rpm lambda bench setup:
	./dev $@
lint:
	./dev setup && .venv/bin/ruff check . && .venv/bin/ruff format --check .
clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
