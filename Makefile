# Two commands for a fresh clone:
#   make demo   install into .venv and run the demo on embedded defaults (local Ray, local lake)
#   make test   install what tests need into .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_ARGS ?=

.PHONY: install demo test bench-ingest clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(BIN)/greenhouse demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-ingest: install
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

clean:
	rm -rf .greenhouse .pytest_cache
