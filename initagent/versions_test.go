package initagent

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

// flappingCache answers as two cache replicas behind one Service do when
// one still holds a rotated-out version: its answers alternate between
// answers[0], answers[1], answers[0]...
type flappingCache struct {
	mu      sync.Mutex
	answers []cacheapi.Result // Value, Version, Created
	asked   int
}

func (c *flappingCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req cacheapi.Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	a := c.answers[c.asked%len(c.answers)]
	c.asked++
	c.mu.Unlock()
	var resp cacheapi.Response
	for _, ref := range req.Secrets {
		res := a
		res.Ref = ref
		resp.Secrets = append(resp.Secrets, res)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (c *flappingCache) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked
}

// startFlappingCache serves c over TLS and returns the spec's Cache and the
// env whose token file the agent sends.
func startFlappingCache(t *testing.T, c *flappingCache) (*spec.Cache, Env) {
	t.Helper()
	ts := httptest.NewUnstartedServer(c)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("a.b.c"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	return &spec.Cache{URL: ts.URL, CA: ca, Required: true}, Env{TokenFile: token}
}

// TestRefreshNeverGoesBack: the cache's answers alternate between the new
// version and a rotated-out one (two replicas). With Key Vault's created
// times the files keep the new version and are never rewritten; an answer
// whose created time is unknown is taken as before.
func TestRefreshNeverGoesBack(t *testing.T) {
	newer := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	older := newer.Add(-24 * time.Hour)
	const vNew, vOld = "22222222222222222222222222222222", "11111111111111111111111111111111"
	tests := []struct {
		name string
		// created of the new and the old version; zero: not in the answer.
		newCreated, oldCreated time.Time
		wantValue              string // what the files end with
		wantKept               bool   // the "kept the files" line logged
	}{
		{name: "created known", newCreated: newer, oldCreated: older, wantValue: "rotated", wantKept: true},
		{name: "created unknown on the older answer", newCreated: newer, wantValue: "", wantKept: false},
		{name: "created unknown on disk", oldCreated: older, wantValue: "", wantKept: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unix := func(t time.Time) int64 {
				if t.IsZero() {
					return 0
				}
				return t.Unix()
			}
			c := &flappingCache{answers: []cacheapi.Result{
				{Value: "rotated", Version: vNew, Created: unix(tt.newCreated)},
				{Value: "rotated-out", Version: vOld, Created: unix(tt.oldCreated)},
			}}
			cache, env := startFlappingCache(t, c)
			dir := t.TempDir()
			s := mustSpec(t, dir, secretFile("password", "0400", "db-password"))
			s.Cache = cache
			var logs, errs syncbuf.Buffer
			a, err := New(Options{Spec: s, Env: env, Err: &errs, Logger: testLogger(&logs),
				NewGetter: func(string) (keyvault.Getter, error) { return nil, nil }})
			if err != nil {
				t.Fatal(err)
			}
			// The agent reads the new version.
			if err := a.Run(context.Background()); err != nil {
				t.Fatalf("Run: %v\n%s", err, errs.String())
			}
			read := func() string {
				b, _ := os.ReadFile(filepath.Join(dir, "password"))
				return string(b)
			}
			if got := read(); got != "rotated" {
				t.Fatalf("after the agent: %q, want the new version's value", got)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Refresh(ctx, time.Second) }()
			// Four refreshes: old, new, old, new. Stop after the fourth
			// answer's cycle, on an old answer's turn.
			deadline := time.Now().Add(15 * time.Second)
			for c.count() < 5 {
				if time.Now().After(deadline) {
					t.Fatalf("the sidecar asked the cache %d times in 15s\n%s", c.count(), logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the fifth cycle writes, if it does
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			log := logs.String()
			if tt.wantValue == "" {
				// As before: every answer is taken.
				if n := strings.Count(log, `"msg":"wrote files"`); n < 3 {
					t.Errorf("unknown created times: %d writes, want the agent's and one per changed answer:\n%s", n, log)
				}
			} else {
				if got := read(); got != tt.wantValue {
					t.Errorf("the files went back: %q, want %q", got, tt.wantValue)
				}
				if n := strings.Count(log, `"msg":"wrote files"`); n != 1 {
					t.Errorf("%d writes, want only the agent's:\n%s", n, log)
				}
			}
			const kept = `"msg":"kept the files: the answer's version is older than the one they hold","vault":"homelab-kv.vault.azure.net","name":"db-password","version":"` +
				vOld + `","created":"2026-11-30T10:00:00Z","versionOnDisk":"` + vNew + `","createdOnDisk":"2026-12-01T10:00:00Z"`
			if got := strings.Contains(log, kept); got != tt.wantKept {
				t.Errorf("logged %s: %v, want %v\n%s", kept, got, tt.wantKept, log)
			}
			assertNoValues(t, log+errs.String(), "rotated")
		})
	}
}

// TestVersionsRecord: the record written with the files names each
// reference's version and created time, and reads back by reference.
func TestVersionsRecord(t *testing.T) {
	dir := t.TempDir()
	created := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	latest := spec.SecretID{Vault: testVault, Name: "a"}
	pinned := spec.SecretID{Vault: testVault, Name: "b", Version: "33333333333333333333333333333333"}
	results := map[spec.SecretID]*fetchResult{
		latest: {secret: keyvault.Secret{Value: "x", Version: "44444444444444444444444444444444", Created: created}},
		pinned: {secret: keyvault.Secret{Value: "y", Version: pinned.Version}},
	}
	if _, err := writeSet(dir, []FileData{{Name: "f", Mode: 0o400, Data: []byte("x")}},
		encodeVersions([]spec.SecretID{latest, pinned}, results), time.Now()); err != nil {
		t.Fatal(err)
	}
	want := map[spec.SecretID]recordedVersion{
		latest: {Vault: testVault, Name: "a", Version: "44444444444444444444444444444444", Created: created.Unix()},
		pinned: {Vault: testVault, Name: "b", Ref: pinned.Version, Version: pinned.Version},
	}
	if diff := cmp.Diff(want, readVersions(dir)); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == versionsFile {
			t.Errorf("the record has a symlink beside the files")
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, dataDirLink, versionsFile))
	if err != nil {
		t.Fatal(err)
	}
	assertNoValues(t, string(b), `"x"`, `"y"`)
}
