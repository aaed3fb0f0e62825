package k8stest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries are the paths of the locally built Kubernetes binaries.
type Binaries struct {
	Dir                      string // holds kube-apiserver, kubectl, ...
	APIServer, Etcd, Kubectl string
}

// ErrNoBinaries says test/cluster/build-binaries.sh has not run.
var ErrNoBinaries = errors.New("the Kubernetes binaries are not built: run make cluster-binaries (or make test)")

// FindRoot returns the repository root: the directory holding go.mod, above
// the working directory.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RepoRoot is FindRoot for tests.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// Locate returns the binaries under root/bin/k8s, or ErrNoBinaries.
func Locate(root string) (Binaries, error) {
	b := Binaries{
		APIServer: newest(filepath.Join(root, "bin/k8s/v*/kube-apiserver")),
		Kubectl:   newest(filepath.Join(root, "bin/k8s/v*/kubectl")),
		Etcd:      newest(filepath.Join(root, "bin/k8s/etcd-*/etcd")),
	}
	if b.APIServer == "" || b.Etcd == "" || b.Kubectl == "" {
		return Binaries{}, fmt.Errorf("%w (looked in %s)", ErrNoBinaries, filepath.Join(root, "bin/k8s"))
	}
	b.Dir = filepath.Dir(b.APIServer)
	return b, nil
}

// Find returns the binaries, or skips the test (fails it under CI) when
// they have not been built.
func Find(t testing.TB) Binaries {
	t.Helper()
	b, err := Locate(RepoRoot(t))
	if err != nil {
		skipOrFail(t, err)
	}
	return b
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoBinaries) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	t.Fatal(err)
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

// Environment points env at the local binaries.
func Environment(env *envtest.Environment, b Binaries) {
	env.BinaryAssetsDirectory = b.Dir
	env.ControlPlane.GetAPIServer().Path = b.APIServer
	env.ControlPlane.Etcd = &envtest.Etcd{Path: b.Etcd}
	env.ControlPlane.KubectlPath = b.Kubectl
}

// Start runs env (a zero Environment is fine) on the local binaries and stops
// it when the test ends.
func Start(t testing.TB, env *envtest.Environment) *rest.Config {
	t.Helper()
	Environment(env, Find(t))
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

// shared is one API server for all tests of a package that need no
// isolation: started by the first Shared call, stopped by StopShared.
var shared struct {
	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	err  error
}

// Shared returns a config for the package's shared API server. Call
// StopShared from TestMain after m.Run.
func Shared(t testing.TB) *rest.Config {
	t.Helper()
	shared.once.Do(func() {
		root, err := FindRoot()
		if err != nil {
			shared.err = err
			return
		}
		b, err := Locate(root)
		if err != nil {
			shared.err = err
			return
		}
		env := &envtest.Environment{}
		Environment(env, b)
		if shared.cfg, shared.err = env.Start(); shared.err == nil {
			shared.env = env
		}
	})
	if shared.err != nil {
		skipOrFail(t, shared.err)
	}
	return rest.CopyConfig(shared.cfg)
}

// StopShared stops the shared API server, if one was started.
func StopShared() {
	if shared.env != nil {
		_ = shared.env.Stop()
	}
}

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago, for a
// server under test.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitReady polls url (a server's /readyz) until it answers 200, for at
// most 30 s.
func WaitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RunServer runs serve until the test ends, then cancels its context and
// fails the test if it returns an error or does not stop within 30 s. The
// context it returns ends with the test.
func RunServer(t testing.TB, serve func(context.Context) error) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the server stopped with: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop within 30s")
		}
	})
	return ctx
}
