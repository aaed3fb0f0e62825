package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesPackages: the kubelet runs this binary on every node, for
// pulls; like the agent it stays small and carries no Kubernetes client
// code. Only the credprovider tests use the kubelet's types, to check the
// wire format.
func TestNoKubernetesPackages(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the packages")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || strings.HasPrefix(pkg, "sigs.k8s.io/") {
			t.Errorf("the binary imports %s", pkg)
		}
	}
}
