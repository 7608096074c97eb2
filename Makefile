# pyinfra-orbstack. `make demo` and `make test` are the README's quick start.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO      ?= go
PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BIN     := bin

VERSION ?= $(shell ./.ci/version 2>/dev/null || echo 0.0.0-dev)
VERSION := $(VERSION)# evaluated once: the binaries and wheels of one make run share it
LDFLAGS := -s -w -X github.com/pyinfra-orbstack/pyinfra-orbstack/internal/buildinfo.Version=$(VERSION)

.PHONY: build
build: ## build bin/pyinfra-orbstack, and on Linux bin/orbctl and bin/orb (the simulator)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pyinfra-orbstack ./cmd/pyinfra-orbstack
ifeq ($(shell uname -s),Linux)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/orbctl ./cmd/orbctl
	ln -sf orbctl $(BIN)/orb
else
	@# The simulator runs on Linux only; elsewhere the tests use OrbStack's own orbctl.
	rm -f $(BIN)/orbctl $(BIN)/orb
endif

# The Python linters, pinned: a new release's new rules land in a commit of their own.
PY_LINTERS := mypy==2.4.1 ruff==0.17.6 types-gevent==26.9.0.20261006

.PHONY: venv
venv: $(VENV)/.installed ## a virtualenv with pyinfra, gevent, pytest, the Python linters and the shim (editable)
$(VENV)/.installed: pyshim/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q 'gevent>=24' pytest $(PY_LINTERS)
	$(VPY) -m pip install -q -e pyshim # and the newest pyinfra that pyshim/pyproject.toml allows
	touch $@

.PHONY: deps
deps: ## install system packages the simulator's machines need (sudo, ping)
	./.ci/deps

.PHONY: test
test: deps build venv lint-py test-go test-monitoring test-fuzz test-py lint-workflows wheel test-darwin ## all tests

.PHONY: test-go
test-go: build
	$(GO) test -count=1 ./...

# The shipped alert rules and dashboard (docs/monitoring/) against a running
# `pyinfra-orbstack monitor`, with Prometheus's own rule parser and PromQL engine: a
# module of its own (internal/monitor/rulecheck/go.mod) so Prometheus stays out of ours.
.PHONY: test-monitoring
test-monitoring: build
	cd internal/monitor/rulecheck && PYINFRA_ORBSTACK_BINARY="$(CURDIR)/$(BIN)/pyinfra-orbstack" $(GO) test -count=1 ./...

# Fuzz targets of the protocol decoder: frames, messages and each method's
# params (internal/rpc/fuzz_test.go; seeds in internal/rpc/testdata/fuzz/).
# An input that fails is written there too: fix the bug and commit it.
# Budgets are execution counts (Nx), not durations: a duration -fuzztime races Go's
# fuzz coordinator at the deadline and fails with a bare "context deadline exceeded"
# and no crasher (golang/go#75804, fixed in Go 1.27; we build with 1.26). A count has
# no deadline to race. 30000 runs is 2-4 s per target on a 2-core CI machine.
FUZZTIME       ?= 1000000x
FUZZTIME_SHORT ?= 30000x
FUZZ_PKG       := ./internal/rpc
FUZZ_TARGETS    = $(shell grep -ho '^func Fuzz[A-Za-z0-9_]*' internal/rpc/*_test.go | cut -c6-)

define run-fuzz
	set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(1))"; \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(1) $(FUZZ_PKG); \
	done
endef

.PHONY: fuzz
fuzz: ## fuzz every target for FUZZTIME runs (default 1000000x) each
	$(call run-fuzz,$(FUZZTIME))

.PHONY: test-fuzz
test-fuzz: ## every fuzz target briefly (FUZZTIME_SHORT runs, default 30000x each): part of make test
	$(call run-fuzz,$(FUZZTIME_SHORT))

.PHONY: test-py
test-py: build venv
	PATH="$(CURDIR)/$(BIN):$$PATH" PYINFRA_ORBSTACK_BINARY="$(CURDIR)/$(BIN)/pyinfra-orbstack" \
		$(VPY) -m pytest -q pyshim/tests

# The end-to-end suite against a real OrbStack (PYINFRA_ORBSTACK_TEST_TARGET=orbstack),
# run here against the simulator with every ORBSIM_* variable unset and a fresh HOME
# (so a fresh ~/.orbsim): what passes uses only what a real orbctl does.
.PHONY: test-orbstack-mode
test-orbstack-mode: deps build venv ## the e2e suite in its real-OrbStack mode, against the knob-less simulator
	home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
	env $$(env | sed -n 's/^\(ORBSIM_[A-Za-z0-9_]*\)=.*/-u \1/p') HOME="$$home" PATH="$(CURDIR)/$(BIN):$$PATH" \
		PYINFRA_ORBSTACK_BINARY="$(CURDIR)/$(BIN)/pyinfra-orbstack" PYINFRA_ORBSTACK_TEST_TARGET=orbstack \
		$(VPY) -m pytest -q pyshim/tests

# Supported versions (docs/compatibility.md): the e2e suite for Python 3.10-3.13, each
# with the oldest pyinfra pyshim/pyproject.toml allows and the newest 3.x (.ci/matrix).
.PHONY: test-matrix
test-matrix: deps build ## the e2e suite per Python 3.10-3.13 x pyinfra oldest/newest; summary in .cache/matrix/summary.md
	./.ci/matrix

# pyinfra's own end-to-end tests (tests/end-to-end of its sdist, for the oldest and the
# newest supported pyinfra) against @orbstack simulator machines, with only their targets
# and fixtures changed (pyshim/upstream_e2e/); a line per test (pass, or skipped and why)
# in .cache/upstream-e2e/summary.md. PYINFRA_E2E_VERSIONS="3.9.0 newest" picks others.
.PHONY: test-pyinfra-e2e
test-pyinfra-e2e: deps build venv ## pyinfra's own e2e tests (oldest and newest pyinfra) against @orbstack machines, per-test report
	$(VPY) pyshim/upstream_e2e/run.py $(PYINFRA_E2E_VERSIONS)

# macOS is where the users are: the module must build, vet and compile its tests there.
DARWIN_TARGETS := darwin_arm64 darwin_amd64

.PHONY: test-darwin
test-darwin: ## cross-build and vet the module and compile its tests (go test -c) for macOS arm64 and amd64
	set -e; for t in $(DARWIN_TARGETS); do \
		echo "== $$t"; \
		GOOS=darwin GOARCH=$${t#*_} $(GO) build ./...; \
		GOOS=darwin GOARCH=$${t#*_} $(GO) vet ./...; \
		GOOS=darwin GOARCH=$${t#*_} $(GO) test -c -o .cache/darwin-tests/$$t/ ./internal/...; \
		GOOS=darwin GOARCH=$${t#*_} $(GO) test -c -o .cache/darwin-tests/$$t/cmd/ ./cmd/...; \
	done

.PHONY: demo
demo: deps build venv ## examples/01-first-deploy against simulator machines, twice (examples/demo.sh)
	./examples/demo.sh

.PHONY: bench
bench: deps build venv ## benchmarks as ratios against baselines measured in the same run (BENCH_ARGS="--before REV --only ops,lines ...")
	PATH="$(CURDIR)/$(BIN):$$PATH" $(VPY) pyshim/bench/bench.py $(BENCH_ARGS)

# Packaging and release: docs/releasing.md. Tools are built from source into .cache/.
TOOLS              := $(CURDIR)/.cache/bin
# goreleaser v2.17+ needs a newer Go or a module the proxy refuses (docs/releasing.md).
GORELEASER_VERSION := v2.16.0
ACTIONLINT_VERSION := v1.7.12
GORELEASER         := $(TOOLS)/goreleaser-$(GORELEASER_VERSION)/goreleaser
ACTIONLINT         := $(TOOLS)/actionlint-$(ACTIONLINT_VERSION)/actionlint
WHEEL_TARGETS      := darwin_arm64 darwin_amd64 linux_amd64 linux_arm64

.PHONY: wheel
wheel: ## platform wheels (macOS and Linux, arm64 and x86_64) in dist/, each checked by internal/wheelcheck
	@mkdir -p dist
	rm -f dist/pyinfra_orbstack-*.whl
	set -e; for t in $(WHEEL_TARGETS); do \
		CGO_ENABLED=0 GOOS=$${t%_*} GOARCH=$${t#*_} $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/bin/$$t/pyinfra-orbstack ./cmd/pyinfra-orbstack; \
		$(PYTHON) pyshim/mkwheel.py --version $(VERSION) --out dist --binary $$t=dist/bin/$$t/pyinfra-orbstack; \
	done
	PYINFRA_ORBSTACK_WHEELS=$(CURDIR)/dist $(GO) test -count=1 -run TestBuiltWheels ./internal/wheelcheck

.PHONY: release-snapshot
release-snapshot: $(GORELEASER) ## a full local release (archives, checksums, wheels) in dist/; publishes nothing
	PYINFRA_ORBSTACK_VERSION=$(VERSION) $(GORELEASER) release --snapshot --clean
	PYINFRA_ORBSTACK_WHEELS=$(CURDIR)/dist $(GO) test -count=1 -run TestBuiltWheels ./internal/wheelcheck

.PHONY: lint
lint: lint-workflows lint-py $(GORELEASER) ## actionlint, mypy --strict and ruff, goreleaser check, go vet
	$(GORELEASER) check
	$(GO) vet ./...

.PHONY: lint-py
lint-py: venv ## mypy --strict and ruff on pyshim/pyinfra_orbstack (configured in pyshim/pyproject.toml; part of make test)
	cd pyshim && ../$(VENV)/bin/mypy && ../$(VENV)/bin/ruff check pyinfra_orbstack

.PHONY: lint-workflows
lint-workflows: $(ACTIONLINT) ## check .github/workflows (cheap: part of make test)
	$(ACTIONLINT)

$(GORELEASER):
	GOBIN=$(@D) $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

$(ACTIONLINT):
	GOBIN=$(@D) $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

.PHONY: clean
clean:
	rm -rf $(BIN) dist
