# Local real Kubernetes for tests (see test/cluster/README.md). Included from the root Makefile:
#   include test/cluster/cluster.mk
CLUSTER_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: cluster-binaries cluster-up cluster-down cluster-smoke cluster-certmanager

## cluster-binaries: build kube-*/kubelet/kubectl/etcd from the Go module proxy (cached in bin/k8s/) and the cluster tools
cluster-binaries:
	$(CLUSTER_DIR)/build-binaries.sh

## cluster-up: start the local single-node cluster (state in _out/cluster; then: source _out/cluster/env)
cluster-up: cluster-binaries
	$(CLUSTER_DIR)/up.sh

## cluster-down: stop it (exactly the processes, containers and mounts it made)
cluster-down:
	$(CLUSTER_DIR)/down.sh

## cluster-smoke: run a token-checking Deployment on the running cluster
cluster-smoke:
	$(CLUSTER_DIR)/smoke.sh

## cluster-certmanager: cert-manager's own controllers and CA injector (the release pinned in test/cluster/certmanager/go.mod) as one program, bin/certmanager; make e2e builds it when it needs it
cluster-certmanager:
	cd $(CLUSTER_DIR)/certmanager && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/bin/certmanager .
