# baton: the commands README.md gives. `make test` is what CI runs.
GO ?= go
FUZZTIME ?= 15s

# Where no registry can be reached (this project's CI), the Go builder and Prometheus
# images are built from what the machine has and selected by variable. On a machine
# that pulls from Docker Hub: make test LOCAL_IMAGES=0
LOCAL_IMAGES ?= 1
ifeq ($(LOCAL_IMAGES),1)
export BATON_GO_IMAGE ?= baton-go-builder:local
export BATON_PROMETHEUS_IMAGE ?= baton-prometheus:local
endif

.PHONY: test unit fuzz e2e images chromium redis build bench bench-short

test: unit fuzz bench-short chaos-short e2e

# Every unit and in-process system test, race detector on.
unit:
	$(GO) vet ./...
	cd e2e && $(GO) vet -tags e2e ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	cd e2e && $(GO) test -count=1 ./...

# The frame decoder's fuzz target, briefly: hostile bytes must never panic it.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/wire

# The compose deployment, driven by the commands a user types; its own module (e2e/)
# so that its test-only dependencies (PromQL parser, chromedp) stay out of baton's.
e2e: images chromium
	cd e2e && $(GO) test -tags e2e -count=1 -v -timeout 40m ./...

# Headless Chromium for the status page test, from Debian's packages.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

images:
ifeq ($(LOCAL_IMAGES),1)
	deploy/images/build-local.sh
endif

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/server ./server
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/client ./client

# baton beside a raw-TCP floor, etcd and Redis (bench/ is its own module: etcd's
# dependencies stay out of baton's). The full run takes about 20 minutes.
bench: redis
	cd bench && $(GO) run . -duration 10s -reps 3 -md ../out/bench.md -json ../out/bench.json

# The same in seconds, for CI: it must keep working; no timing is asserted.
bench-short: redis
	cd bench && $(GO) vet . && $(GO) test . && $(GO) run . -short

redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; (systemctl disable --now redis-server || service redis-server stop) >/dev/null 2>&1 || true; }

# The nemesis and checker (chaos/, docs/chaos.md): a seeded, randomized, bounded fault
# run against the real server and workers on 127.0.0.1, its history checked. The seed
# is printed; CHAOS_SEED=N replays a schedule. chaos-short is the CI run.
CHAOS_FOR ?= 3m
CHAOS_SEED ?=
.PHONY: chaos chaos-short
chaos:
	$(GO) run ./chaos -for $(CHAOS_FOR) -seed $(or $(CHAOS_SEED),0)

chaos-short:
	$(GO) run ./chaos -for 75s -workers 4 -seed $(or $(CHAOS_SEED),0)
