# Two entry points: `make run` (set up and run the bot) and `make test` (set up and run the tests);
# `make demo` tries it in a browser with no credentials; `make bench` runs the benchmark
# (docs/benchmark.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One more than the cores, at least 3 (docs/development.md says why): 3 on the 2-core machines.
PYTEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(max(3, (os.cpu_count() or 2) + 1))')

.PHONY: run test check-types bench demo screenshot lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The versions the image ships (requirements.lock), without their hashes: pip checks hashes for
# everything once one file has them, and callbot itself, installed editable, has none. `make run`
# and `make test` install within them, so the tests run what the container runs.
$(VENV)/constraints.txt: requirements.lock | $(BIN)/python
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' requirements.lock > $@

$(VENV)/.run-deps: pyproject.toml $(VENV)/constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e '.[test]'
	touch $@

run: $(VENV)/.run-deps
	@test -f .env || { cp .env.example .env; echo "Created .env from .env.example: fill in the Slack and Evo Voice credentials."; }
	@test -f callbot.toml || { cp callbot.example.toml callbot.toml; echo "Created callbot.toml from callbot.example.toml: list who may call."; }
	$(BIN)/python -m bot

# Tests run in PYTEST_WORKERS processes (pytest-xdist); PYTEST_WORKERS=0 runs them in this one.
# Bytecode is written and reused even where PYTHONDONTWRITEBYTECODE is set (an empty value unsets
# it): otherwise every `python -m bot` a test starts compiles bot/ again, and every worker rewrites
# the test modules' asserts again.
test: $(VENV)/.test-deps
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q --numprocesses=$(PYTEST_WORKERS) --dist=worksteal
	$(BIN)/mypy
	$(BIN)/ruff check bot tests bench

demo: $(VENV)/.run-deps
	$(BIN)/python -m bot demo

# The README's picture of the demo (needs chromium: apt-get install chromium fonts-noto-color-emoji).
screenshot: $(VENV)/.test-deps
	$(BIN)/python -m bot.demo.screenshot docs/demo.png

# requirements.lock and requirements-build.lock, hash-pinned, for the Dockerfile (after changing
# the dependencies in pyproject.toml; run on CPython 3.11 linux x86_64, the image's platform).
lock: $(BIN)/python
	$(BIN)/python scripts/lock.py

bench: $(VENV)/.run-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
