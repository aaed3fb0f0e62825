# kvinject: make help lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_TAG ?= $(VERSION)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOTEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: help build test unit lint fmt vet clean

## help: list the targets
help:
	@grep -hE '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

## build: build the static kvinject binary into bin/kvinject
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kvinject ./cmd/kvinject

## test: every test: vet and format checks, unit and envtest tests with -race (builds the Kubernetes binaries once, cached in bin/)
test: cluster-binaries lint
	$(GO) test $(GOTEST_FLAGS) ./...

## unit: the Go tests only, without building the Kubernetes binaries (tests that need them skip)
unit:
	$(GO) test $(GOTEST_FLAGS) ./...

## lint: go vet and gofmt
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## fmt: format the Go code
fmt:
	gofmt -w $$(git ls-files '*.go')

## clean: remove build outputs (keeps the cached Kubernetes binaries)
clean:
	rm -f bin/kvinject bin/*.tar

-include test/cluster/cluster.mk
