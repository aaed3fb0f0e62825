// Package k8stest finds the Kubernetes binaries that
// test/cluster/build-binaries.sh builds from the Go module proxy into bin/k8s,
// and starts controller-runtime's envtest (a real kube-apiserver and etcd)
// with them.
//
// Tests that need them skip when they are missing, except under CI (CI=true),
// where a missing binary is a failure: `make test` builds them first.
package k8stest
