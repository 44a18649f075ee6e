# larkway — see README.md. Every target works on a bare machine of this kind:
# tools are installed at pinned versions into .tools/, services by scripts/.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.5.1

TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)
export GOFLAGS := -buildvcs=false
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

GO_PLUGINS := echo commands approval
# Every module of the workspace (go.work: the core, proto, sdk/go, plugins).
# ./... alone stops at a nested module's go.mod, even in workspace mode.
GO_PKGS = $(patsubst $(CURDIR)%,.%/...,$(shell go list -m -f '{{.Dir}}'))
TEST_TIMEOUT ?= 30m

.PHONY: build
build: ## build the larkway binary and the example plugins into bin/
	go build -ldflags "$(LDFLAGS)" -o bin/larkway ./core/cmd/larkway
	go build $(GO_PKGS)
	@for p in $(GO_PLUGINS); do go build -o bin/plugins/$$p ./plugins/$$p; done

.PHONY: tools
tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/promtool ## install code generators and promtool at pinned versions

$(TOOLS)/buf:
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
$(TOOLS)/promtool:
	scripts/promtool.sh

.PHONY: generate
generate: tools ## regenerate proto/gen (the only writer of generated code)
	buf lint
	buf generate
	sdk/python/generate.sh
	go generate ./core/...

.PHONY: lint
lint: tools ## buf lint, gofmt, go vet
	buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(GO_PKGS)

.PHONY: run
run: build ## the whole system on the embedded bus, with the echo plugin and the Lark emulator
	scripts/demo.sh

.PHONY: services-up services-down
services-up: ## start real Redis and Pulsar (installing them if missing)
	scripts/redis.sh start
	scripts/pulsar.sh start
services-down: ## stop them
	-scripts/pulsar.sh stop
	-scripts/redis.sh stop

.PHONY: test
test: tools build ## start real Redis and Pulsar (and install Chromium for the browser tests), run every test against them, stop them
	@redis_up=0; pulsar_up=0; \
	scripts/redis.sh status >/dev/null 2>&1 && redis_up=1; \
	scripts/pulsar.sh status >/dev/null 2>&1 && pulsar_up=1; \
	trap '[ $$pulsar_up = 1 ] || scripts/pulsar.sh stop || true; [ $$redis_up = 1 ] || scripts/redis.sh stop || true' EXIT; \
	scripts/redis.sh start; scripts/pulsar.sh start; \
	scripts/chromium.sh install >/dev/null; \
	eval "$$(scripts/env.sh)"; \
	sdk/python/test.sh; \
	scripts/kubevalidate.sh >/dev/null; \
	scripts/images.sh; \
	go test -race -shuffle=on -count=1 -timeout $(TEST_TIMEOUT) $(GO_PKGS); \
	go test -tags faults -count=1 -timeout 20m ./core/internal/faults; \
	scripts/fuzz.sh

.PHONY: screenshots
screenshots: ## refresh docs/img from the browser tests (needs Redis; make services-up)
	scripts/chromium.sh install >/dev/null
	eval "$$(scripts/env.sh)"; LARKWAY_SCREENSHOTS=1 go test -count=1 -run 'InBrowser' ./core/internal/console/

.PHONY: images
images: ## build the core, Go plugin and Python base images with buildah (installed with apt if missing)
	scripts/images.sh

.PHONY: bench bench-1m
bench: build ## larkway bench with same-run reference points (bench/results/), then the Go benchmarks
	scripts/bench.sh --runs 3 --bus memory,embedded,pulsar --out bench/results/
	go test -run '^$$' -bench . -benchmem -count 5 ./core/... | tee bench.out
bench-1m: build ## 1 000 000 events webhook → Pulsar → Go plugin → emulator: 0 lost, 0 duplicated, throughput, p50/p99
	scripts/bench.sh --scenarios e2e --bus pulsar --events 1000000 --runs 1 --out bench/results/

.PHONY: clean
clean:
	rm -rf bin .tools bench.out
