# WhaleMountain's tasks. `make help` lists them; CI calls them verbatim.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/wm
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# The linter beyond vet, run at a pinned version (fetched once into the
# module cache).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the wm binary into bin/wm (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wm

# The systems make release builds wm for: the students' laptops and the
# admins' servers.
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
DIST      ?= dist

.PHONY: release
release: ## cross-compile wm for linux, macOS and Windows into dist/, with SHA256SUMS
	rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; if [ $$os = windows ]; then ext=.exe; fi; \
	  out=wm-$(VERSION)-$$os-$$arch$$ext; echo "  $(DIST)/$$out"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/$$out ./cmd/wm; \
	done
	cd $(DIST) && sha256sum wm-* > SHA256SUMS

# make demo says first what it needs (Go, a Docker Engine, git, Debian's
# busybox-static) and installs only busybox-static and git when missing;
# with them there, it needs no network.
.PHONY: demo
demo: ## the main job: example repos → containers on the local Docker Engine (offline once busybox-static is installed)
	@bash ci/demo needs
	@$(MAKE) --no-print-directory build
	@bash ci/demo

.PHONY: demo-clean
demo-clean: ## remove what make demo made, and nothing else: its containers, volumes, networks, images and demo/
	@bash ci/demo clean

IMAGE ?= whalemountain/wm:$(VERSION)
IMAGE_BASE ?= wm-demo/busybox:1

.PHONY: image
image: build ## the wm image for CI's validate job (needs a Docker Engine; offline base by default)
	bash ci/busybox-base $(IMAGE_BASE)
	DOCKER_BUILDKIT=0 docker build -q --build-arg BASE=$(IMAGE_BASE) -t $(IMAGE) .
	docker run --rm $(IMAGE) wm --version

.PHONY: setup
setup: ## install what the tests need on this machine (idempotent)
	bash ci/setup

.PHONY: test
test: setup ## run every test: the fast set under the race detector, then all against the real engines
	$(GO) test -count=1 -race -short -timeout 10m ./...
	bash ci/kube-up >/dev/null
	bash ci/docker2-up >/dev/null
	$(GO) test -count=1 -timeout 25m ./...

# The fault suite (cmd/wm/chaos_test.go): wm serve killed at random points
# of its passes; the registry, the apiserver, GitLab and a Docker daemon
# failing under it; its state disk full; its state store lost or
# corrupted. make test runs it with 4 kill points; WM_CHAOS_SEED replays a
# run's kill points.
CHAOS_TESTS := TestWmServeKilledAtRandomPoints|TestPassesWaitWhile|TestALostOrCorruptedStateStore|TestWhileGitLabIsDown|TestWhileTheStateDiskIsFull

.PHONY: chaos
chaos: setup ## the fault suite in full (20 kill points), against the real engines
	bash ci/kube-up >/dev/null
	WM_CHAOS=full $(GO) test -count=1 -timeout 15m -v -run '$(CHAOS_TESTS)' ./cmd/wm/

.PHONY: test-short
test-short: ## the fast set only (pure and fake-backed tests, no engine), under the race detector
	$(GO) test -count=1 -race -short -timeout 10m ./...

.PHONY: lint
lint: ## go vet, staticcheck and a gofmt check
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

.PHONY: fmt
fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

.PHONY: bench
bench: ## run every benchmark (~15 min) and print one table, each figure against its baseline; keeps it in BENCH.md
	bash ci/kube-up >/dev/null
	bash ci/docker2-up >/dev/null
	$(GO) run ./bench -write BENCH.md -log $${TMPDIR:-/tmp}/wm-bench.log

.PHONY: fuzz
fuzz: ## fuzz the wm.yaml parser for FUZZTIME (default 30s)
	$(GO) test ./schema -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s}

.PHONY: validate-examples
validate-examples: build ## check every example with the built binary
	$(BIN) validate examples/
	$(BIN) validate --server examples/server/wm-server.yaml
