# cartworker — see README.md. Every target works on a fresh Debian machine
# with Go: Docker is installed and started on demand, images are built locally.

SHELL := /bin/bash
GO    ?= go

# testcontainers-go: the Ryuk reaper image cannot be pulled here (tests clean
# up with t.Cleanup instead), and container ports must be reached on loopback.
export TESTCONTAINERS_RYUK_DISABLED ?= true
export TESTCONTAINERS_HOST_OVERRIDE ?= 127.0.0.1

# Images: the defaults are in deployments/images.env, read by the scripts
# and the integration suite; NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE and
# WORKER_IMAGE in the environment or on the command line override them.

INTEGRATION_TIMEOUT ?= 30m

# make chaos-order: each order scenario CHAOS_RUNS times (about 20 s a run
# when it passes, up to 3 minutes when commands are stuck).
CHAOS_RUNS    ?= 20
CHAOS_TIMEOUT ?= 4h
CHAOS_TESTS   := TestOrder(SIGKILLWithQueuedCommands|SIGSTOPTenSeconds|NATSRestartThenLeave)

.PHONY: help run demo stop logs images test test-unit test-integration test-example chaos-order lint bench bench-memory build k8s-tools

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

run: ## start the whole stack (NATS, Redis, daprd, worker) as containers
	@scripts/stack.sh up

demo: build ## publish a cart's commands with bin/cartctl and print the cart read back through Dapr
	@bin/cartctl demo

stop: ## stop and remove the stack
	@scripts/stack.sh down

logs: ## follow the worker's logs
	@scripts/stack.sh logs

images: ## build the container images locally (skips those present)
	@scripts/build-images.sh

build: ## build the binaries into bin/: bin/worker and bin/cartctl (bin/cartctl -h)
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o bin/ ./cmd/...

test: lint test-unit test-integration ## unit tests (race detector) and the integration suite

lint: ## gofmt and go vet, both must be clean
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/... ./cartworkertest/...
	cd examples/gotest && $(GO) vet ./...

test-unit: k8s-tools ## unit tests with the race detector
	$(GO) test -race -count=1 ./...

k8s-tools: ## build helm and kustomize (tools/helm/go.mod, cached), which the deployments/ tests run
	@scripts/k8s-tools.sh >/dev/null

# -p 1: the two suites one after the other, not competing for the CPUs.
test-integration: ## integration suite and cartworkertest's own tests against real containers, then examples/gotest (builds images first)
	@scripts/ensure-docker.sh
	@scripts/build-images.sh
	CHAOS_RUNS=1 $(GO) test -p 1 -tags integration -count=1 -timeout $(INTEGRATION_TIMEOUT) -v ./integration/... ./cartworkertest/...
	$(MAKE) --no-print-directory example-tests

test-example: ## examples/gotest alone: a publisher's own go test against cartworkertest (builds images first)
	@scripts/ensure-docker.sh
	@scripts/build-images.sh
	$(MAKE) --no-print-directory example-tests

# examples/gotest is a module of its own (a user's service): go test there,
# with the TESTCONTAINERS_* variables exported above.
.PHONY: example-tests
example-tests:
	cd examples/gotest && $(GO) test -count=1 -timeout 10m ./...

chaos-order: ## the order scenarios (SIGKILL with queued commands, SIGSTOP 10 s, NATS restart then leave) CHAOS_RUNS times each (default 20); not part of make test
	@scripts/ensure-docker.sh
	@scripts/build-images.sh
	CHAOS_RUNS=$(CHAOS_RUNS) $(GO) test -tags integration -count=1 -timeout $(CHAOS_TIMEOUT) -v -run '$(CHAOS_TESTS)' ./integration/

# make bench-memory: the two memory drains, BENCH_BACKLOG_ROUNDS each (3).
BENCH_MEMORY_MIB ?= 48

bench-memory: ## memory drains (200 carts x 100 add-items; 2 carts x 10,000, past the size limit): peak RSS of each against BENCH_MEMORY_MIB (48), heap profile tops
	@BENCH_CLOSED=0 BENCH_PEER=0 BENCH_WATERMILL=0 BENCH_TRANSPORTS=0 BENCH_BACKLOG="many huge" BENCH_BACKLOG_MODES=pooled \
	  BENCH_PROFILE=1 BENCH_MEMORY_MIB=$(BENCH_MEMORY_MIB) scripts/bench.sh

bench: ## load test (bench/loadgen): worker modes, Watermill and Dapr pub/sub peers, HTTP and go-sdk ceilings, backlog drains, an idle instance; writes bench/REPORT.md
	@scripts/bench.sh
