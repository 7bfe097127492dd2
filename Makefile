# Two commands for a fresh clone:
#   make demo   install into .venv and run the demo on embedded defaults (local Ray, local lake)
#   make test   install what tests need into .venv, lint (ruff check + format, mypy), bring the
#               real engines up (stack/), run the whole test suite, and stop the engines it started
# Also: make test-embedded (no engines: their tests skip), make stack-up / stack-down.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_ARGS ?=
# The test command's Kafka: three KRaft brokers, so that the broker-failure tests run too
# (a Kafka the developer already runs is used as it is).
STACK_KAFKA_BROKERS ?= 3
export STACK_KAFKA_BROKERS

.PHONY: install demo lint browser test test-embedded stack-up stack-down bench-ingest bench-sink bench-serve bench-preprocess bench-control bench-scale clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(BIN)/greenhouse demo $(DEMO_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian's chromium and its driver, for the Ray dashboard's browser test (a no-op when installed)
browser:
	stack/browser

# The test command also runs the KubeRay tests against a real control plane (stack/stack up k8s:
# etcd, kube-apiserver, the KubeRay operator; built once into ~/.cache).
test: export STACK_K8S ?= 1
test: install lint browser
	stack/with-stack $(BIN)/python -m pytest $(PYTEST_ARGS)

test-embedded: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

stack-up: install
	stack/stack up

stack-down:
	stack/stack down

bench-ingest: install
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

bench-sink: install
	$(BIN)/python bench/sink.py $(BENCH_ARGS)

bench-serve: install
	$(BIN)/python bench/serve.py $(BENCH_ARGS)

bench-preprocess: install
	$(BIN)/python bench/preprocess.py $(BENCH_ARGS)

bench-control: install
	$(BIN)/python bench/control.py $(BENCH_ARGS)

bench-scale: install
	stack/with-stack $(BIN)/python bench/scale.py $(BENCH_ARGS)

clean:
	rm -rf .greenhouse .pytest_cache
