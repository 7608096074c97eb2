# pyinfra-orbstack. `make demo` and `make test` are the README's quick start.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO      ?= go
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BIN     := bin

VERSION ?= $(shell ./.ci/version 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -s -w -X github.com/pyinfra-orbstack/pyinfra-orbstack/internal/buildinfo.Version=$(VERSION)

.PHONY: build
build: ## build bin/pyinfra-orbstack, bin/orbctl and bin/orb (the simulator)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pyinfra-orbstack ./cmd/pyinfra-orbstack
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/orbctl ./cmd/orbctl
	ln -sf orbctl $(BIN)/orb

.PHONY: venv
venv: $(VENV)/.installed ## a virtualenv with pyinfra, gevent, pytest and the shim (editable)
$(VENV)/.installed: pyshim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q 'pyinfra>=3.10,<4' 'gevent>=24' pytest
	$(VPY) -m pip install -q -e pyshim
	touch $@

.PHONY: deps
deps: ## install system packages the simulator's machines need (sudo, ping)
	./.ci/deps

.PHONY: test
test: deps build venv test-go test-py ## all tests

.PHONY: test-go
test-go: build
	$(GO) test -count=1 ./...

.PHONY: test-py
test-py: build venv
	PATH="$(CURDIR)/$(BIN):$$PATH" PYINFRA_ORBSTACK_BINARY="$(CURDIR)/$(BIN)/pyinfra-orbstack" \
		$(VPY) -m pytest -q pyshim/tests

.PHONY: demo
demo: deps build venv ## create simulator machines and run a real pyinfra deploy against them
	./testdata/demo/run-demo.sh

.PHONY: bench
bench: deps build venv ## benchmarks, reported as ratios against a baseline measured in the same run
	PATH="$(CURDIR)/$(BIN):$$PATH" $(VPY) pyshim/bench/bench.py

.PHONY: clean
clean:
	rm -rf $(BIN) dist
