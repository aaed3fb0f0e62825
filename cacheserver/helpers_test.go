package cacheserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/testkit/cachetest"
	"github.com/kvinject/kvinject/internal/testkit/emutest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

const (
	tenantID  = "11111111-2222-3333-4444-555555555555"
	clientID  = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	vaultName = "homelab-kv"
	vaultURL  = "https://homelab-kv.vault.azure.net"

	// Planted values: none may appear in a log line.
	dbPassword  = "db-pass-clark-kent"
	apiKey      = "api-key-lois-lane"
	bigValue1   = "big-value-one-"
	otherSecret = "other-pass-jimmy"
)

func TestMain(m *testing.M) {
	code := m.Run()
	emutest.CloseIssuer()
	os.Exit(code)
}

// fakeClock is the cache's Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testEnv is a cache in front of the emulator, with a fake clock, a fake
// reviewer and its logs in a buffer.
type testEnv struct {
	emu      *azemu.Emulator
	iss      *oidctest.Issuer
	srv      *Server
	clock    *fakeClock
	reviewer *cachetest.Reviewer
	reg      *prometheus.Registry
	// down makes the emulator unreachable: the proxy is a closed port.
	down atomic.Bool

	logMu  sync.Mutex
	logs   bytes.Buffer
	tokens []string // every token a test sent, for the log check
}

func newTestEnv(t *testing.T, mutate func(*Options)) *testEnv {
	t.Helper()
	iss := emutest.Issuer(t)
	sub := func(sa string) string { return "system:serviceaccount:apps:" + sa }
	emu := emutest.Start(t, azemu.Config{
		Tenants: []azemu.Tenant{{ID: tenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{{ClientID: clientID, Tenant: tenantID, FederatedCredentials: []azemu.FederatedCredential{
			{Name: "apps-web", Issuer: iss.URL(), Subject: sub("web")},
			{Name: "apps-worker", Issuer: iss.URL(), Subject: sub("worker")},
			{Name: "batch-loader", Issuer: iss.URL(), Subject: "system:serviceaccount:batch:loader"},
		}}},
		Vaults: []azemu.Vault{{
			Name: vaultName, Tenant: tenantID,
			RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
			Secrets: []azemu.Secret{
				{Name: "db-password", Versions: []azemu.SecretVersion{{Value: dbPassword}}},
				{Name: "api-key", Versions: []azemu.SecretVersion{{Value: apiKey, ContentType: "text/plain"}}},
				{Name: "other", Versions: []azemu.SecretVersion{{Value: otherSecret}}},
				{Name: "big-1", Versions: []azemu.SecretVersion{{Value: bigValue1 + strings.Repeat("x", 2000)}}},
			},
		}},
	})
	env := &testEnv{emu: emu, iss: iss, clock: &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		reviewer: cachetest.NewReviewer(), reg: prometheus.NewRegistry()}
	proxyURL, err := url.Parse(emu.ProxyURL())
	if err != nil {
		t.Fatal(err)
	}
	closed := closedPortURL(t)
	o := Options{
		TTL: time.Hour, MaxStale: 24 * time.Hour,
		AuthorityHost: "https://login.microsoftonline.com/",
		Proxy: func(*http.Request) (*url.URL, error) {
			if env.down.Load() {
				return closed, nil
			}
			return proxyURL, nil
		},
		RootCAs:    emu.CertPool(),
		Retry:      &policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
		Reviewer:   env.reviewer,
		Registerer: env.reg,
		Logger: funcr.New(func(prefix, args string) {
			env.logMu.Lock()
			defer env.logMu.Unlock()
			env.logs.WriteString(prefix + " " + args + "\n")
		}, funcr.Options{Verbosity: 1}),
		Now:             env.clock.Now,
		UpstreamTimeout: 20 * time.Second,
	}
	if mutate != nil {
		mutate(&o)
	}
	env.srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.srv.Close()
		env.checkLogs(t)
	})
	return env
}

// checkLogs fails the test when a log line holds a planted value or a
// token the test sent.
func (env *testEnv) checkLogs(t *testing.T) {
	t.Helper()
	env.logMu.Lock()
	defer env.logMu.Unlock()
	logs := env.logs.String()
	for _, secret := range append([]string{dbPassword, apiKey, bigValue1, otherSecret}, env.tokens...) {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold a secret value or a token (%d bytes):\n%s", len(secret), logs)
		}
	}
}

func closedPortURL(t *testing.T) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	return u
}

// token mints a projected token of apps/sa for the exchange audience.
func (env *testEnv) token(t *testing.T, sa string) string {
	t.Helper()
	return env.tokenIn(t, "apps", sa)
}

// tokenIn mints a projected token of ns/sa for the exchange audience.
func (env *testEnv) tokenIn(t *testing.T, ns, sa string) string {
	t.Helper()
	tok, err := env.iss.ServiceAccountToken(ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	env.tokens = append(env.tokens, tok)
	return tok
}

func request(names ...string) cacheapi.Request {
	req := cacheapi.Request{ClientID: clientID, TenantID: tenantID}
	for _, n := range names {
		req.Secrets = append(req.Secrets, cacheapi.SecretRef{Vault: vaultURL, Name: n})
	}
	return req
}

type answer struct {
	status  int
	resp    cacheapi.Response
	refusal string
	header  http.Header
}

func (env *testEnv) postRaw(t *testing.T, token string, body []byte) answer {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, cacheapi.Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	env.srv.ServeHTTP(w, r)
	a := answer{status: w.Code, header: w.Header()}
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &a.resp); err != nil {
			t.Fatalf("decode the response: %v", err)
		}
	} else {
		var ref cacheapi.Refusal
		if err := json.Unmarshal(w.Body.Bytes(), &ref); err != nil {
			t.Fatalf("decode the refusal %q: %v", w.Body.String(), err)
		}
		a.refusal = ref.Error
	}
	return a
}

func (env *testEnv) post(t *testing.T, token string, req cacheapi.Request) answer {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return env.postRaw(t, token, body)
}

// kvGets is the number of secret reads the emulator answered.
func (env *testEnv) kvGets() int64 { return env.emu.Stats().Classes[azemu.ClassKVGet].Requests }

// tokenExchanges is the number of token requests the emulator answered.
func (env *testEnv) tokenExchanges() int64 { return env.emu.Stats().Classes[azemu.ClassToken].Requests }

func (env *testEnv) lookups(result string) float64 {
	return testutil.ToFloat64(env.srv.metrics.lookups.WithLabelValues(result))
}

func (env *testEnv) refusals(reason string) float64 {
	return testutil.ToFloat64(env.srv.metrics.refusals.WithLabelValues(reason))
}

func (env *testEnv) logged() string {
	env.logMu.Lock()
	defer env.logMu.Unlock()
	return env.logs.String()
}

func testutilEntries(env *testEnv) float64 { return testutil.ToFloat64(env.srv.metrics.entries) }

func base64URLDecode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func base64URLEncode(b []byte) string          { return base64.RawURLEncoding.EncodeToString(b) }
