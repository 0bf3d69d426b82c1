# speechbatch: every install step lives here or in scripts/, never only on a laptop.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps test-deps demo test test-fast lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

system-deps:          ## espeak-ng for the offline `local` engine
	scripts/system-deps.sh espeak-ng

test-deps: install    ## everything the suite needs (chromium: the dashboard's browser tests); services start inside the tests
	scripts/system-deps.sh espeak-ng redis-server postgresql chromium

demo: install system-deps
	$(BIN)/python examples/demo.py

test: test-deps       ## two test processes, each module's tests on one (module-scoped stacks start once)
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

test-fast: install    ## unit tests only: no services
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: test-deps      ## every benchmark; services are started for each as needed
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.throughput --items 2000 --latency-ms 200 --cap 16
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.overhead
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.transports
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.streaming
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.ws_sessions
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.stitching
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.failover
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.long_audio
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.bulk_submit
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.ratelimit
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.archive_expansion
	$(BIN)/python -m tests.services run -- $(BIN)/python -m bench.metrics

clean:
	rm -rf $(VENV) .speechbatch out .pytest_cache .mypy_cache .ruff_cache
