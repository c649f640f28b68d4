# banger build, test and lint entry points. See README.md and AGENTS.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO        ?= go
BIN       := build/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# EXTRA_LDFLAGS is appended to the linker flags; the release tests use it
# to build a binary that trusts a throwaway key
# (-X banger/internal/release.keyOverride=...). Releases never set it.
EXTRA_LDFLAGS ?=
LDFLAGS   := -s -w -X banger/internal/buildinfo.Version=$(VERSION) $(EXTRA_LDFLAGS)
PREFIX    ?= /usr/local
DESTDIR   ?=
# staticcheck runs at the version CI pins, through `go run` (fetched and
# built once into Go's caches), so a fresh checkout needs nothing installed
# by hand. STATICCHECK=staticcheck uses one on PATH instead.
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
SCRIPTS   := $(wildcard scripts/*.sh) $(wildcard .ci/*)

.PHONY: all build test lint fmt coverage coverage-html coverage-total run deps clean bench e2e fuzz reliability install uninstall release-dry-run

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-vsock-agent ./cmd/banger-vsock-agent

test:
	$(GO) test ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@if ! command -v shellcheck >/dev/null 2>&1; then \
	  echo "lint: shellcheck is not installed: make deps (or apt-get install shellcheck, dnf install ShellCheck)" >&2; exit 1; fi
	@if [ -n "$(SCRIPTS)" ]; then shellcheck --severity=error $(SCRIPTS); fi

fmt:
	gofmt -w $$(git ls-files '*.go')

coverage:
	$(GO) test -coverpkg=./... -coverprofile=coverage.out ./... >/dev/null
	@scripts/coverage-report.sh coverage.out

coverage-html: coverage
	$(GO) tool cover -html=coverage.out -o coverage.html
	@echo "wrote coverage.html"

coverage-total:
	@$(GO) test -coverpkg=./... -coverprofile=coverage.out ./... >/dev/null
	@$(GO) tool cover -func=coverage.out | awk '/^total:/ {print $$3}'

bench:
	scripts/bench/run.sh

# Checks and installs the host packages banger needs, builds, and runs a VM.
run: deps build
	$(BIN)/banger vm run

deps:
	scripts/host-deps.sh

# Installs the binaries and the systemd units (PREFIX, DESTDIR honoured);
# see docs/install.md.
install: build
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BIN_DIR=$(BIN) scripts/install.sh --local

uninstall:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) scripts/install.sh --local --uninstall

clean:
	rm -rf build coverage.out coverage.html

# The release rehearsal: publishes this checkout with --dry-run into
# build/release signed by a throwaway key, then installs it from there with
# install.sh (see docs/release-process.md). Real releases:
# scripts/publish-banger-release.sh vX.Y.Z.
release-dry-run:
	rm -rf build/release
	scripts/release-dry-run.sh v0.0.0 build/release

# Every fuzz target, one after the other, FUZZTIME each (default 30s) with
# a short minimisation; fails on a crash. FUZZ=REGEX picks targets.
FUZZTIME ?= 30s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# End-to-end: real VMs under QEMU through the CLI (see e2e/doc.go).
e2e:
	$(GO) test -tags e2e -count=1 -timeout 40m -v ./e2e/...

# The fault suite: SIGKILL at every phase, a full disk, a damaged store,
# parallel work and hostile inputs (see docs/reliability.md). Writes
# build/reliability/results.md.
reliability:
	$(GO) test -tags reliability -count=1 -timeout 20m -v ./reliability/...
