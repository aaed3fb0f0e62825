package main

// The agent asking the kvinject cache (spec.Cache): a real cache server
// (cacheserver) over TLS on loopback, in front of the same
// emulator the agent reaches directly through HTTPS_PROXY. Only the API
// server's TokenReview is answered without a cluster (cachetest.Reviewer);
// the e2e tests run the cache on the local cluster.

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvinject/kvinject/cacheserver"
	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/cachetest"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

// cacheFixture is a kvinject cache serving on loopback with its own clock.
type cacheFixture struct {
	ts       *httptest.Server
	caPEM    string
	reviewer *cachetest.Reviewer
	// offset moves the cache's clock; down cuts the cache off from Azure
	// (its proxy becomes a closed port) while the agent still reaches it.
	offset atomic.Int64
	down   atomic.Bool

	logMu sync.Mutex
	logs  bytes.Buffer
}

func (h *harness) startCache() *cacheFixture {
	h.t.Helper()
	c := &cacheFixture{reviewer: cachetest.NewReviewer()}
	proxyURL, err := url.Parse(h.emu.ProxyURL())
	if err != nil {
		h.t.Fatal(err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL, _ := url.Parse(closed.URL)
	closed.Close()
	srv, err := cacheserver.New(cacheserver.Options{
		AuthorityHost: "https://login.microsoftonline.com/",
		Proxy: func(*http.Request) (*url.URL, error) {
			if c.down.Load() {
				return closedURL, nil
			}
			return proxyURL, nil
		},
		RootCAs:    h.emu.CertPool(),
		Retry:      &policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
		Reviewer:   c.reviewer,
		Registerer: prometheus.NewRegistry(),
		Logger: funcr.New(func(prefix, args string) {
			c.logMu.Lock()
			defer c.logMu.Unlock()
			c.logs.WriteString(prefix + " " + args + "\n")
		}, funcr.Options{}),
		Now:             func() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) },
		UpstreamTimeout: 10 * time.Second,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	c.ts = httptest.NewUnstartedServer(srv)
	c.ts.EnableHTTP2 = true
	c.ts.StartTLS()
	c.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ts.Certificate().Raw}))
	h.t.Cleanup(func() {
		c.ts.Close()
		srv.Close()
		c.logMu.Lock()
		defer c.logMu.Unlock()
		h.checkNoSecrets(result{stderr: c.logs.String()})
	})
	return c
}

// with returns s asking this cache.
func (c *cacheFixture) with(s *spec.Spec, required bool) *spec.Spec {
	s.Cache = &spec.Cache{URL: c.ts.URL, CA: c.caPEM, Required: required}
	return s
}

func (c *cacheFixture) logged() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.logs.String()
}

// upstream counts the token exchanges and secret reads the emulator
// answered, whoever asked.
func (h *harness) upstream() [2]int64 {
	return [2]int64{h.requests(azemu.ClassToken), h.requests(azemu.ClassKVGet)}
}

// TestAgentThroughCache: the first pod's agent makes the cache read Azure;
// the next ones are served from memory; past the TTL with Azure cut off,
// the last value is served and said stale in the agent's log.
func TestAgentThroughCache(t *testing.T) {
	h := newHarness(t)
	c := h.startCache()
	want := map[string]string{"username": "0400 superman", "password": "0400 louiselane"}

	r := h.run(c.with(contractSpec(t), true))
	if r.code != 0 {
		t.Fatalf("first pod: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(want, h.files()); diff != "" {
		t.Errorf("first pod: files (-want +got):\n%s", diff)
	}
	if got := h.upstream(); got != [2]int64{1, 1} {
		t.Errorf("first pod: %d token exchanges and %d reads, want 1 and 1 (the cache's)", got[0], got[1])
	}
	for _, s := range []string{`"fromCache":1,"stale":0`} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("first pod: the log lacks %s:\n%s", s, r.stderr)
		}
	}
	if strings.Contains(r.stderr, `"signed in"`) || strings.Contains(r.stderr, "httpsRequests") {
		t.Errorf("first pod: the agent went to Azure itself:\n%s", r.stderr)
	}

	for i := range 3 {
		r = h.run(c.with(contractSpec(t), true))
		if r.code != 0 {
			t.Fatalf("pod %d: exit %d, stderr:\n%s", i+2, r.code, r.stderr)
		}
	}
	if got := h.upstream(); got != [2]int64{1, 1} {
		t.Errorf("after 4 pods: %d token exchanges and %d reads, want still 1 and 1", got[0], got[1])
	}

	// Past the TTL, with Azure cut off from the cache: the last value.
	c.offset.Store(int64(cacheserver.DefaultTTL + time.Minute))
	c.down.Store(true)
	r = h.run(c.with(contractSpec(t), true))
	if r.code != 0 {
		t.Fatalf("stale: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(want, h.files()); diff != "" {
		t.Errorf("stale: files (-want +got):\n%s", diff)
	}
	for _, s := range []string{`"msg":"the cache served a stale value: it could not reach Azure to renew it","vault":"homelab-kv.vault.azure.net","name":"app-pgsql"`, `"fromCache":1,"stale":1`} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stale: the log lacks %s:\n%s", s, r.stderr)
		}
	}
	if !strings.Contains(c.logged(), `"outcome"="stale"`) {
		t.Errorf("the cache did not log the stale serve:\n%s", c.logged())
	}
}

// TestAgentCacheFallback: what the agent does when the cache cannot answer,
// with kvinject.io/cache "true" (read Azure directly) and "required" (fail
// with the cause).
func TestAgentCacheFallback(t *testing.T) {
	tests := []struct {
		name     string
		required bool
		// setup breaks something and returns the spec.
		setup func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec
		// wantLog is in the agent's log; wantProblem in its problem line.
		wantLog, wantProblem string
		// wantUpstream is the emulator's count of token exchanges and reads.
		wantUpstream [2]int64
	}{
		{
			name: "cache unreachable", required: false,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				c.ts.Close()
				return c.with(contractSpec(t), false)
			},
			wantLog:      `"msg":"the cache did not answer: reading from Azure directly"`,
			wantUpstream: [2]int64{1, 1},
		},
		{
			name: "cache unreachable, required", required: true,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				c.ts.Close()
				return c.with(contractSpec(t), true)
			},
			wantProblem:  "error: vault homelab-kv.vault.azure.net, secret app-pgsql: cannot reach the cache at 127.0.0.1:",
			wantUpstream: [2]int64{0, 0},
		},
		{
			name: "a certificate the spec's CA did not sign, required", required: true,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				s := c.with(contractSpec(t), true)
				other, err := certtest.SelfSigned(certtest.EC, "127.0.0.1") // another key, the same name
				if err != nil {
					t.Fatal(err)
				}
				s.Cache.CA = string(certtest.CertsPEM(other.Cert))
				return s
			},
			wantProblem:  "tls: failed to verify certificate",
			wantUpstream: [2]int64{0, 0},
		},
		{
			name: "the cache cut off from Azure, nothing cached", required: false,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				c.down.Store(true)
				return c.with(contractSpec(t), false)
			},
			wantLog:      `"msg":"the cache has no value: reading it from Azure directly","vault":"homelab-kv.vault.azure.net","name":"app-pgsql","status":0`,
			wantUpstream: [2]int64{1, 1},
		},
		{
			name: "the cache cut off from Azure, nothing cached, required", required: true,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				c.down.Store(true)
				return c.with(contractSpec(t), true)
			},
			wantProblem:  "(the kvinject cache's answer)",
			wantUpstream: [2]int64{0, 0},
		},
		{
			name: "a token for another audience, required", required: true,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				h.writeToken(oidctest.Claims{Namespace: namespace, ServiceAccount: saName, Audience: []string{"https://kubernetes.default.svc"}})
				return c.with(contractSpec(t), true)
			},
			wantProblem:  "refused the request (401 wrong-audience)",
			wantUpstream: [2]int64{0, 0},
		},
		{
			// Key Vault's refusal is the answer: reading directly would
			// get the same, so the agent does not.
			name: "no such secret", required: false,
			setup: func(t *testing.T, h *harness, c *cacheFixture) *spec.Spec {
				return c.with(specOf(t, [2]string{"x", "secret:no-such-secret"}), false)
			},
			wantProblem:  `error: vault homelab-kv.vault.azure.net, secret no-such-secret: no secret named "no-such-secret" in the vault (404 SecretNotFound) (the kvinject cache's answer)`,
			wantUpstream: [2]int64{1, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.startCache()
			r := h.run(tt.setup(t, h, c))
			if tt.wantProblem == "" {
				if r.code != 0 {
					t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
				}
				if diff := cmp.Diff(map[string]string{"username": "0400 superman", "password": "0400 louiselane"}, h.files()); diff != "" {
					t.Errorf("files (-want +got):\n%s", diff)
				}
			} else {
				if r.code != 1 {
					t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
				}
				if !strings.Contains(r.errorLines(), tt.wantProblem) {
					t.Errorf("problem lines lack %q:\n%s", tt.wantProblem, r.errorLines())
				}
				if tt.required && !strings.Contains(r.errorLines(), "Fix: ") {
					t.Errorf("problem lines have no fix:\n%s", r.errorLines())
				}
			}
			if tt.wantLog != "" && !strings.Contains(r.stderr, tt.wantLog) {
				t.Errorf("the log lacks %s:\n%s", tt.wantLog, r.stderr)
			}
			if got := h.upstream(); got != tt.wantUpstream {
				t.Errorf("%d token exchanges and %d reads, want %d and %d", got[0], got[1], tt.wantUpstream[0], tt.wantUpstream[1])
			}
		})
	}
}

// TestRefreshThroughCache: the refresh sidecar asks the cache too. A new
// version in Key Vault reaches the files once the cache's entry is past its
// TTL, and the sidecar itself never signs in to Azure.
func TestRefreshThroughCache(t *testing.T) {
	h := newHarness(t)
	c := h.startCache()
	s := c.with(contractSpec(t), true)
	if r := h.run(s); r.code != 0 {
		t.Fatalf("agent: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	raw, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	bin, env := agentBinary(t)
	cmd := exec.CommandContext(ctx, bin, "--dir", h.dir, "--refresh", "1s")
	cmd.Env = append(env, spec.EnvSpec+"="+raw)
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	const newValue = `{"username":"superman","password":"kal-el-rotated"}`
	planted = append(planted, "kal-el-rotated")
	if _, err := h.emu.SetSecret(vaultName, "app-pgsql", newValue, "application/json"); err != nil {
		t.Fatal(err)
	}
	// Within the TTL the cache serves the version it read: the files stay.
	time.Sleep(2500 * time.Millisecond)
	if got := h.files()["password"]; got != "0400 louiselane" {
		t.Fatalf("within the cache's TTL: password %q, want the cached value", got)
	}
	c.offset.Store(int64(cacheserver.DefaultTTL + time.Minute))
	deadline := time.Now().Add(20 * time.Second)
	for h.files()["password"] != "0400 kal-el-rotated" {
		if time.Now().After(deadline) {
			t.Fatalf("past the cache's TTL: the files never took the new version; sidecar log:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel() // SIGTERM: the sidecar stops, exit 0
	<-done
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the sidecar exited %d on SIGTERM; log:\n%s", code, stderr.String())
	}
	log := stderr.String()
	h.checkNoSecrets(result{stderr: log})
	if strings.Contains(log, `"signed in"`) || strings.Contains(log, "reading from Azure directly") {
		t.Errorf("the sidecar went to Azure itself:\n%s", log)
	}
	if got := h.upstream(); got != [2]int64{2, 2} {
		t.Errorf("%d token exchanges and %d reads, want 2 and 2 (the cache's, before and after its TTL)", got[0], got[1])
	}
}

// TestRefreshNoFlapAfterDirectRead: the agent read a new version from Key
// Vault directly while the cache still holds the one before it; the
// sidecar, asking the cache, keeps the new version on disk rather than
// going back to the rotated-out one (Key Vault's created times, recorded
// beside the files and answered by the cache, say which is older).
func TestRefreshNoFlapAfterDirectRead(t *testing.T) {
	h := newHarness(t)
	c := h.startCache()
	if r := h.run(c.with(contractSpec(t), false)); r.code != 0 {
		t.Fatalf("agent through the cache: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	const newValue = `{"username":"superman","password":"kal-el-newer"}`
	planted = append(planted, "kal-el-newer")
	if _, err := h.emu.SetSecret(vaultName, "app-pgsql", newValue, "application/json"); err != nil {
		t.Fatal(err)
	}
	// A direct read (the cache off for this pod) gets the new version.
	if r := h.run(contractSpec(t)); r.code != 0 {
		t.Fatalf("agent reading directly: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if got := h.files()["password"]; got != "0400 kal-el-newer" {
		t.Fatalf("after the direct read: password %q, want the new version", got)
	}

	s := c.with(contractSpec(t), true)
	raw, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	bin, env := agentBinary(t)
	cmd := exec.CommandContext(ctx, bin, "--dir", h.dir, "--refresh", "1s")
	cmd.Env = append(env, spec.EnvSpec+"="+raw)
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Within its TTL the cache answers the older version: kept twice.
	const kept = `"msg":"kept the files: the answer's version is older than the one they hold"`
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(stderr.String(), kept) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar did not keep the files twice; log:\n%s", stderr.String())
		}
		if got := h.files()["password"]; got != "0400 kal-el-newer" {
			t.Fatalf("the sidecar went back to the cached, older version: password %q; log:\n%s", got, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	log := stderr.String()
	h.checkNoSecrets(result{stderr: log})
	if got := h.files()["password"]; got != "0400 kal-el-newer" {
		t.Errorf("password %q at the end, want the new version", got)
	}
	if strings.Contains(log, `"msg":"wrote files"`) {
		t.Errorf("the sidecar wrote files:\n%s", log)
	}
	for _, s := range []string{`"name":"app-pgsql"`, `"createdOnDisk":`, `"versionOnDisk":`} {
		if !strings.Contains(log, s) {
			t.Errorf("the kept line lacks %s:\n%s", s, log)
		}
	}
}
