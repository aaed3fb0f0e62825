package webhookserver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/webhook"
)

const testCacheURL = "https://kvinject-cache.kvinject-system.svc.cluster.local."

// newCachePEM is a new CA certificate as PEM.
func newCachePEM(t *testing.T) []byte {
	t.Helper()
	c, err := certtest.SelfSigned(certtest.EC, "kvinject-cache")
	if err != nil {
		t.Fatal(err)
	}
	return certtest.CertsPEM(c.Cert)
}

// cacheOptions are testOptions with a cache whose CA is ca.
func cacheOptions(t *testing.T, ca []byte) *webhook.Options {
	t.Helper()
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.TenantID = testTenant
	o.DefaultVault = "homelab-kv"
	o.CacheURL, o.CacheCA = testCacheURL, ca
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

// writeAtomically replaces path as the kubelet updates a mounted Secret or
// ConfigMap: a reader sees the old content or the new, never a part.
func writeAtomically(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// logLines is a logger that keeps its lines for a test.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// eventually waits, at most 5 s, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
	}
}

// TestWatchCacheCA: a changed CA file is swapped in as soon as it is a
// valid bundle; a bundle that is not valid, or a file that is gone, is
// logged once and the last good CA stays.
func TestWatchCacheCA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.crt")
	first, second, third := newCachePEM(t), newCachePEM(t), newCachePEM(t)
	writeAtomically(t, path, first)
	options := current(cacheOptions(t, first))
	start := options.Load()

	var log logLines
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), log.logger()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchCacheCA(ctx, path, time.Millisecond, options)
	}()
	defer func() {
		cancel()
		<-done
	}()
	caOf := func() []byte { return options.Load().CacheCA }

	writeAtomically(t, path, second)
	eventually(t, "the second CA", func() bool { return bytes.Equal(caOf(), second) })
	if start.CacheCA == nil || !bytes.Equal(start.CacheCA, first) {
		t.Errorf("the options the watcher started from were changed")
	}

	writeAtomically(t, path, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	eventually(t, "the bad bundle logged", func() bool { return log.count("not valid: keeping the last good CA") > 0 })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the missing file logged", func() bool { return log.count("cannot read the cache CA file") > 0 })
	if !bytes.Equal(caOf(), second) {
		t.Errorf("a bad or missing file replaced the last good CA")
	}
	time.Sleep(20 * time.Millisecond) // many intervals: each problem is logged once
	if n, m := log.count("not valid"), log.count("cannot read"); n != 1 || m != 1 {
		t.Errorf("logged the bad bundle %d times and the missing file %d times, want once each", n, m)
	}

	writeAtomically(t, path, third)
	eventually(t, "the third CA", func() bool { return bytes.Equal(caOf(), third) })
	if log.count("can be read again") != 1 || log.count("pods admitted from now on trust the new bundle") != 2 {
		t.Errorf("log lines:\n%s", log.String())
	}
}

// TestHandlerReadsCurrentOptions: each admission uses the options stored
// at that moment, so a reloaded CA reaches the next pod.
func TestHandlerReadsCurrentOptions(t *testing.T) {
	first, second := newCachePEM(t), newCachePEM(t)
	options := current(cacheOptions(t, first))
	h := &PodHandler{Options: options, ServiceAccounts: staticSA{spec.SAAnnotationClientID: testClientID}}
	pod := readPod(t, "../../webhook/testdata/mutate/cache-on.in.yaml")
	for _, want := range [][]byte{first, second} {
		next, err := options.Load().WithCacheCA(want)
		if err != nil {
			t.Fatal(err)
		}
		options.Store(next)
		resp := admitDirect(t, h, pod)
		got := agentSpecOf(t, patchPod(t, pod, resp.Patch)).Cache
		if got == nil || got.CA != string(want) {
			t.Fatalf("the spec's cache %+v, want the CA stored last", got)
		}
	}
}
