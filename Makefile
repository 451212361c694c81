# mig2 — a v2 migration handshake for QEMU and libvirt.
# `make demo` and `make test` work on a fresh Debian 12 machine as root: they install what they need.

GO        ?= go
BIN       := bin/mig2
FUZZTIME  ?= 60s
INTEGRATION_TIMEOUT ?= 40m
export CGO_ENABLED := 1

.PHONY: all build deps test test-unit test-integration test-libvirt lint demo fuzz bench clean

all: build

deps:
	@./scripts/deps.sh
	@$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/mig2

include mk/guest.mk

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

## test: everything — lint, unit tests, then the integration suite against real QEMU and a booted guest.
test: lint test-unit test-integration

test-unit: deps
	$(GO) test -count=1 ./...

## test-integration: real QEMU 7.2 (TCG) running the self-checking test guest.
test-integration: deps guest build
	MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 -timeout $(INTEGRATION_TIMEOUT) -v ./... 2>&1 | \
	  ./scripts/testsummary.sh

## test-libvirt: the libvirt suite: two libvirt hosts in namespaces (the lab), mig2's libvirt
## path, the qemu hook. Part of test-integration.
test-libvirt: deps guest build
	MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 -timeout $(INTEGRATION_TIMEOUT) -v \
	  -run 'Libvirt|Lab|Hook' ./test/integration/... ./hooks/... 2>&1 | ./scripts/testsummary.sh

## demo: a real guest migrated with mig2 (v2, TLS) between two local QEMUs.
demo: deps guest build
	./scripts/demo.sh

## fuzz: run every fuzz target for FUZZTIME (default 60s) each.
fuzz: deps
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin
