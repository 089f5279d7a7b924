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

.PHONY: test lint unit fuzz e2e images build bench bench-short run

test: lint unit fuzz bench-short chaos-short e2e

# go vet and staticcheck (pinned) on all three modules.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd e2e && $(GO) vet -tags e2e ./... && $(STATICCHECK) -tags e2e ./...
	cd bench && $(GO) vet ./... && $(STATICCHECK) ./...

# Every unit and in-process system test, race detector on.
unit:
	$(GO) test -race -count=1 -timeout 15m ./...
	cd e2e && $(GO) test -count=1 ./...

# The frame decoder's fuzz target, briefly: hostile bytes must never panic it.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/wire

# The compose deployment, driven by the commands a user types; its own module (e2e/)
# so that its test-only dependencies (PromQL parser, chromedp) stay out of baton's.
# Needs Debian's chromium (.ci/run installs it).
e2e: images
	cd e2e && $(GO) test -tags e2e -count=1 -v -timeout 40m ./...

images:
ifeq ($(LOCAL_IMAGES),1)
	deploy/images/build-local.sh
endif

# The deployment on this machine: Compose v2 found or built, public or local images,
# the choice kept in .env for the compose commands that follow (README, "Run it").
run:
	deploy/run.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/server ./server
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/client ./client

# baton beside a raw-TCP floor, etcd and Redis (bench/ is its own module: etcd's
# dependencies stay out of baton's). Needs Debian's redis-server (.ci/run installs
# it). The full run takes about 20 minutes.
bench:
	cd bench && $(GO) run . -duration 10s -reps 3 -md ../out/bench.md -json ../out/bench.json

# The same in seconds, for CI: it must keep working; no timing is asserted.
bench-short:
	cd bench && $(GO) test . && $(GO) run . -short

# The nemesis and checker (chaos/, docs/chaos.md): a seeded, randomized, bounded fault
# run against three replicated servers and workers on 127.0.0.1, its history checked.
# The seed is printed; CHAOS_SEED=N replays a schedule; CHAOS_FLAGS adds flags (e.g.
# -keep -dir out/chaos). chaos-short is the CI run, with every kind of fault.
CHAOS_FOR ?= 3m
CHAOS_SEED ?=
CHAOS_FLAGS ?=
.PHONY: chaos chaos-short
chaos:
	$(GO) run ./chaos -for $(CHAOS_FOR) -seed $(or $(CHAOS_SEED),0) $(CHAOS_FLAGS)

chaos-short:
	$(GO) run ./chaos -for 75s -workers 4 -seed $(or $(CHAOS_SEED),0) $(CHAOS_FLAGS)
