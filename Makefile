# baton: the commands README.md gives. `make test` is what CI runs.
GO ?= go
FUZZTIME ?= 15s

.PHONY: test unit fuzz build bench

test: unit fuzz

# Every unit and in-process system test, race detector on.
unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

# The frame decoder's fuzz target, briefly: hostile bytes must never panic it.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/wire

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/server ./server
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/client ./client
