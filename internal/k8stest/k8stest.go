package k8stest

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries are the paths of the locally built Kubernetes binaries.
type Binaries struct {
	Dir                      string // holds kube-apiserver, kubectl, ...
	APIServer, Etcd, Kubectl string
}

// RepoRoot returns the directory holding go.mod, walking up from the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Find returns the binaries, or skips the test (fails it under CI) when
// they have not been built.
func Find(t testing.TB) Binaries {
	t.Helper()
	root := RepoRoot(t)
	b := Binaries{
		APIServer: newest(filepath.Join(root, "bin/k8s/v*/kube-apiserver")),
		Kubectl:   newest(filepath.Join(root, "bin/k8s/v*/kubectl")),
		Etcd:      newest(filepath.Join(root, "bin/k8s/etcd-*/etcd")),
	}
	if b.APIServer == "" || b.Etcd == "" || b.Kubectl == "" {
		msg := "Kubernetes binaries not built: run make cluster-binaries (or make test)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	b.Dir = filepath.Dir(b.APIServer)
	return b
}

// newest returns the last match of a glob in lexical order (the highest
// version), or "" when nothing matches.
func newest(pattern string) string {
	m, _ := filepath.Glob(pattern)
	sort.Strings(m)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

// Start runs env (a zero Environment is fine) on the local binaries and stops
// it when the test ends.
func Start(t testing.TB, env *envtest.Environment) *rest.Config {
	t.Helper()
	b := Find(t)
	env.ControlPlane.GetAPIServer().Path = b.APIServer
	env.ControlPlane.Etcd = &envtest.Etcd{Path: b.Etcd}
	env.ControlPlane.KubectlPath = b.Kubectl
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	return cfg
}
