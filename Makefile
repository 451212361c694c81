# mig2 — a v2 migration handshake for QEMU and libvirt.
# `make demo` and `make test` work on a fresh Debian 12 machine as root: they install what they need.

GO        ?= go
BIN       := bin/mig2
FUZZTIME  ?= 60s
INTEGRATION_TIMEOUT ?= 40m
export CGO_ENABLED := 1

.PHONY: all build deps test test-unit test-integration test-libvirt test-qemu-backports lint demo fuzz bench clean soak reliability reliability-doc

all: build

deps:
	@./scripts/deps.sh
	@$(GO) mod download

## build: bin/mig2 is pure Go (tag nolibvirt: it starts in ~10 ms, where loading libvirt's C
## library costs ~35 ms of CPU); for a libvirt domain it runs bin/mig2-libvirt, the same
## program with libvirt. bin/mig2-guard is the source guard mig2 migrate starts.
build: deps
	CGO_ENABLED=0 $(GO) build -tags nolibvirt -o $(BIN) ./cmd/mig2
	$(GO) build -o $(dir $(BIN))mig2-libvirt ./cmd/mig2
	CGO_ENABLED=0 $(GO) build -o $(dir $(BIN))mig2-guard ./cmd/mig2-guard

include mk/guest.mk

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	CGO_ENABLED=0 $(GO) vet -tags nolibvirt ./cmd/...

## test: everything — lint, unit tests, then the integration suite against real QEMU and a booted guest.
test: lint test-unit test-integration

test-unit: deps
	$(GO) test -count=1 ./...
	CGO_ENABLED=0 $(GO) test -count=1 -tags nolibvirt ./cmd/...

## test-integration: real QEMU 7.2 (TCG) running the self-checking test guest.
## Its go test -json stream is kept in INTEGRATION_JSON (make reliability-doc reads it).
INTEGRATION_JSON ?= bin/integration.json
test-integration: deps guest build
	$(GO) build -o bin/test2text ./test/tools/test2text
	MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 -timeout $(INTEGRATION_TIMEOUT) -json ./... 2>&1 | \
	  tee $(INTEGRATION_JSON) | bin/test2text | ./scripts/testsummary.sh

## test-libvirt: the libvirt suite: two libvirt hosts in namespaces (the lab), mig2's libvirt
## path, the qemu hook. Part of test-integration.
test-libvirt: deps guest build
	MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 -timeout $(INTEGRATION_TIMEOUT) -v \
	  -run 'Libvirt|Lab|Hook' ./test/integration/... ./hooks/... 2>&1 | ./scripts/testsummary.sh

## test-qemu-backports: the plain-QEMU fault and cancel tests on bookworm-backports' QEMU (10.0
## when written), unpacked beside the system's by scripts/qemu-backports.sh and run through
## MIG2_QEMU. Not part of `make test`: it downloads about 14 MB from Debian.
QEMU_BACKPORTS_TESTS ?= ^(TestFault.*|TestCancel|TestDestinationKilled|TestMigrateSuccess|TestV1PlainQEMU)$$
test-qemu-backports: deps guest build
	q=$$(./scripts/qemu-backports.sh) || exit 1; echo "test-qemu-backports: $$($$q --version | head -1)"; \
	MIG2_QEMU=$$q MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 \
	  -timeout $(INTEGRATION_TIMEOUT) -v -run '$(QEMU_BACKPORTS_TESTS)' ./test/integration/ 2>&1 | ./scripts/testsummary.sh

## demo: a real guest migrated with mig2 (v2, TLS) between two local QEMUs.
demo: deps guest build
	./scripts/demo.sh

## bench: the migration benchmark (bench/): mig2 against QEMU's defaults, virsh in the libvirt
## lab and the best hand-tuned QMP setting, on the test guest; writes docs/bench/ (README.md,
## SVG plots, results.json). About 50 minutes on an idle 2-core machine. For development, shorten it with
## BENCH_REPS=1 BENCH_CASES=rand:50 BENCH_SWEEP=minimal BENCH_LIBVIRT=0 (bench/doc.go).
bench: deps guest build
	$(GO) build -o bin/mig2-bench ./bench
	bin/mig2-bench -mig2 $(BIN) -out docs/bench

## fuzz: run every fuzz target for FUZZTIME (default 60s) each.
fuzz: deps
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin

## install: bin/mig2, bin/mig2-libvirt (mig2 with libvirt, for libvirt domains) and bin/mig2-guard (its source guard) to $(DESTDIR)$(PREFIX)/bin and the agent's systemd unit to
## $(DESTDIR)$(UNITDIR) (default $(PREFIX)/lib/systemd/system: systemd searches
## /usr/local/lib/systemd/system, and PREFIX=/usr gives /usr/lib/systemd/system, a distribution
## package's place). The unit's ExecStart is rewritten to $(PREFIX)/bin/mig2. Then, as root:
## `systemctl daemon-reload`, `mig2 hook install`, restart libvirtd, `systemctl enable --now
## mig2-agent` (packaging/README.md).
PREFIX  ?= /usr/local
UNITDIR ?= $(PREFIX)/lib/systemd/system
UNIT    := packaging/mig2-agent.service

.PHONY: install test-vagrant lint-units
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/mig2
	install -m 755 $(dir $(BIN))mig2-guard $(DESTDIR)$(PREFIX)/bin/mig2-guard
	install -m 755 $(dir $(BIN))mig2-libvirt $(DESTDIR)$(PREFIX)/bin/mig2-libvirt
	sed 's|/usr/local/bin/mig2|$(PREFIX)/bin/mig2|g' $(UNIT) > $(DESTDIR)$(UNITDIR)/mig2-agent.service.tmp
	chmod 644 $(DESTDIR)$(UNITDIR)/mig2-agent.service.tmp
	mv $(DESTDIR)$(UNITDIR)/mig2-agent.service.tmp $(DESTDIR)$(UNITDIR)/mig2-agent.service

## test-vagrant: installs the Debian packages vagrant and vagrant-libvirt if missing, then
## `vagrant validate` on vagrant/Vagrantfile with the libvirt provider (no box is needed).
test-vagrant:
	@missing=; for p in vagrant vagrant-libvirt; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "test-vagrant: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends $$missing </dev/null >/dev/null 2>&1 || \
	  { apt-get update -q </dev/null >/dev/null && apt-get install -y -q --no-install-recommends $$missing </dev/null; }; \
	fi
	cd vagrant && VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate </dev/null

## lint-units: `systemd-analyze verify` on the agent's unit where systemd is installed, else
## packaging's own check of its sections and keys (the same test `go test ./...` runs).
lint-units:
	$(GO) test -count=1 -run TestUnit -v ./packaging/

## soak: not part of `make test`. SOAK_PLAIN migrations back and forth between two plain QEMUs
## and SOAK_LAB between the libvirt lab's two hosts, the dirtying guest's memory verified after
## each; the agents' RSS and goroutines sampled after each. Results: SOAK_OUT (JSON).
SOAK_PLAIN   ?= 100
SOAK_LAB     ?= 40
SOAK_OUT     ?= $(CURDIR)/test/soak/results.json
SOAK_TIMEOUT ?= 6h
soak: deps guest build
	MIG2_BIN=$(CURDIR)/$(BIN) SOAK_PLAIN=$(SOAK_PLAIN) SOAK_LAB=$(SOAK_LAB) SOAK_OUT=$(SOAK_OUT) \
	  $(GO) test -tags soak -count=1 -p 1 -timeout $(SOAK_TIMEOUT) -v ./test/soak/

## reliability: runs the fault, hostile-peer and cancel tests with -json and regenerates
## docs/RELIABILITY.md from their results and the soak's (SOAK_OUT; `make soak` first).
RELIABILITY_TESTS ?= ^(TestHostile.*|TestFault.*|TestLabFault.*|TestDestinationKilled|TestCancel)$$
RELIABILITY_JSON  ?= bin/reliability.json
## reliability-doc: docs/RELIABILITY.md from the last `make test` (INTEGRATION_JSON) and soak.
reliability-doc:
	$(GO) run ./test/tools/reliability -o docs/RELIABILITY.md -soak $(SOAK_OUT) -run '$(RELIABILITY_TESTS)' $(INTEGRATION_JSON)

reliability: deps guest build
	@echo "reliability: running $(RELIABILITY_TESTS) (go test -json into $(RELIABILITY_JSON))"
	@MIG2_BIN=$(CURDIR)/$(BIN) $(GO) test -tags integration -count=1 -p 1 -timeout $(INTEGRATION_TIMEOUT) -json \
	  -run '$(RELIABILITY_TESTS)' ./test/integration/ > $(RELIABILITY_JSON); rc=$$?; \
	  $(GO) run ./test/tools/reliability -o docs/RELIABILITY.md -soak $(SOAK_OUT) $(RELIABILITY_JSON) || rc=1; \
	  exit $$rc
