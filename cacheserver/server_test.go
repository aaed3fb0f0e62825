package cacheserver

// Tests of the cache against the Entra ID and Key Vault emulator through
// the real SDK, with real tokens signed by a test issuer the emulator
// federates with: apps/web and apps/worker are federated with the
// identity, apps/intruder is not.

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/cacheapi"
)

// seen is the part of a Result a test compares.
type seen struct {
	Name, Value string
	Stale       bool
	Age         int64
	Status      int
	Code        string
}

func brief(a answer) []seen {
	var out []seen
	for _, r := range a.resp.Secrets {
		s := seen{Name: r.Ref.Name, Value: r.Value, Stale: r.Stale, Age: r.AgeSeconds}
		if r.Error != nil {
			s.Status, s.Code = r.Error.Status, r.Error.Code
		}
		out = append(out, s)
	}
	return out
}

func wantOK(t *testing.T, a answer) {
	t.Helper()
	if a.status != 200 {
		t.Fatalf("status %d (%s), want 200", a.status, a.refusal)
	}
}

func TestHitAfterMissMakesNoUpstreamRequest(t *testing.T) {
	env := newTestEnv(t, nil)
	tok := env.token(t, "web")
	first := env.post(t, tok, request("db-password", "api-key"))
	wantOK(t, first)
	gets, exchanges := env.kvGets(), env.tokenExchanges()
	env.clock.Advance(10 * time.Minute)
	second := env.post(t, env.token(t, "web"), request("db-password", "api-key"))
	wantOK(t, second)

	want := []seen{{Name: "db-password", Value: dbPassword, Age: 600}, {Name: "api-key", Value: apiKey, Age: 600}}
	if diff := cmp.Diff(want, brief(second)); diff != "" {
		t.Errorf("second answer (-want +got):\n%s", diff)
	}
	if got := second.resp.Secrets[1].ContentType; got != "text/plain" {
		t.Errorf("content type %q, want text/plain", got)
	}
	if len(second.resp.Secrets[0].Version) != 32 {
		t.Errorf("resolved version %q, want 32 hex digits", second.resp.Secrets[0].Version)
	}
	if diff := cmp.Diff([]int64{2, 1}, []int64{gets, exchanges}); diff != "" {
		t.Errorf("first answer's upstream reads and token exchanges (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{gets, exchanges}, []int64{env.kvGets(), env.tokenExchanges()}); diff != "" {
		t.Errorf("upstream requests after the hit (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]float64{2, 2}, []float64{env.lookups(resultMiss), env.lookups(resultHit)}); diff != "" {
		t.Errorf("misses and hits (-want +got):\n%s", diff)
	}
}

func TestSubjectsNeverShareAValue(t *testing.T) {
	env := newTestEnv(t, nil)
	wantOK(t, env.post(t, env.token(t, "web"), request("db-password")))

	worker := env.post(t, env.token(t, "worker"), request("db-password"))
	wantOK(t, worker)
	if got := env.kvGets(); got != 2 {
		t.Errorf("apps/worker's read of a value apps/web cached made %d reads in all, want 2 (its own)", got)
	}
	intruder := env.post(t, env.token(t, "intruder"), request("db-password"))
	wantOK(t, intruder)
	want := []seen{{Name: "db-password", Status: 401, Code: "AADSTS700213"}}
	if diff := cmp.Diff(want, brief(intruder)); diff != "" {
		t.Errorf("apps/intruder, not federated, asking for a cached secret (-want +got):\n%s", diff)
	}
	if p := intruder.resp.Secrets[0].Error.Cause; !strings.Contains(p, "no federated credential of client id "+clientID+" matches the token's subject") {
		t.Errorf("problem %q does not give the agent's diagnosis", p)
	}
}

func TestConcurrentRequestsMakeOneUpstreamRead(t *testing.T) {
	env := newTestEnv(t, nil)
	// Slow answers, so that every request arrives while the first reads.
	env.emu.SetKnobs(azemu.Knobs{RequestLatency: 300 * time.Millisecond})
	tok := env.token(t, "web")
	const callers = 20
	answers := make([]answer, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { answers[i] = env.post(t, tok, request("db-password")) })
	}
	wg.Wait()
	for i, a := range answers {
		if diff := cmp.Diff([]seen{{Name: "db-password", Value: dbPassword}}, brief(a)); diff != "" {
			t.Errorf("caller %d (-want +got):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff([]int64{1, 1}, []int64{env.kvGets(), env.tokenExchanges()}); diff != "" {
		t.Errorf("upstream reads and token exchanges of %d concurrent callers (-want +got):\n%s", callers, diff)
	}
}

// TestOutageServesStaleWithinMaxStale: a value past its TTL is served,
// marked stale, while the upstream cannot answer, until MaxStale past the
// TTL; then the caller gets the diagnosis and no value.
func TestOutageServesStaleWithinMaxStale(t *testing.T) {
	tests := []struct {
		name       string
		outage     func(*testEnv)
		wantStatus int
	}{
		{"unreachable", func(env *testEnv) { env.down.Store(true) }, 0},
		{"key vault answers 503", func(env *testEnv) {
			env.emu.SetKnobs(azemu.Knobs{FaultRate: 1, RateFaults: []azemu.Fault{{Kind: azemu.FaultUnavailable}}, RateClasses: []azemu.Class{azemu.ClassKVGet}})
		}, 503},
		{"entra id answers 503", func(env *testEnv) {
			env.emu.SetKnobs(azemu.Knobs{FaultRate: 1, RateFaults: []azemu.Fault{{Kind: azemu.FaultUnavailable}}, RateClasses: []azemu.Class{azemu.ClassToken}})
		}, 503},
		{"key vault throttles", func(env *testEnv) {
			env.emu.SetKnobs(azemu.Knobs{FaultRate: 1, RateFaults: []azemu.Fault{{Kind: azemu.FaultThrottle}}, RateClasses: []azemu.Class{azemu.ClassKVGet}})
		}, 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, nil)
			tok := env.token(t, "web")
			wantOK(t, env.post(t, tok, request("db-password")))
			tt.outage(env)

			env.clock.Advance(time.Hour + time.Minute)
			stale := env.post(t, tok, request("db-password"))
			if diff := cmp.Diff([]seen{{Name: "db-password", Value: dbPassword, Stale: true, Age: 3660}}, brief(stale)); diff != "" {
				t.Errorf("61 minutes after the read, TTL 1h (-want +got):\n%s", diff)
			}
			env.clock.Advance(24 * time.Hour)
			gone := env.post(t, tok, request("db-password"))
			got := brief(gone)
			if len(got) == 1 {
				got[0].Code = "" // the outage's code, if any, is not the point
			}
			if diff := cmp.Diff([]seen{{Name: "db-password", Status: tt.wantStatus}}, got); diff != "" {
				t.Errorf("past TTL + MaxStale (-want +got):\n%s", diff)
			}
			if gone.resp.Secrets[0].Error == nil || gone.resp.Secrets[0].Error.Cause == "" {
				t.Errorf("no diagnosis past MaxStale: %+v", gone.resp.Secrets[0])
			}
			if diff := cmp.Diff([]float64{1, 1}, []float64{env.lookups(resultStale), env.lookups(resultError)}); diff != "" {
				t.Errorf("stale serves and errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRevocationForgets: a refusal serves nothing, and the value is not
// served stale by a later outage either.
func TestRevocationForgets(t *testing.T) {
	tests := []struct {
		name     string
		revoke   func(*testing.T, *testEnv)
		want     seen
		problem  string
		freshHit bool // before the TTL, the cached value is still served
	}{
		{"federated credential removed", func(t *testing.T, env *testEnv) {
			if err := env.emu.RemoveFederatedCredential(clientID, "apps-web"); err != nil {
				t.Fatal(err)
			}
		}, seen{Name: "db-password", Status: 401, Code: "AADSTS700213"}, "AADSTS700213", true},
		{"secret deleted", func(t *testing.T, env *testEnv) {
			if err := env.emu.DeleteSecret(vaultName, "db-password"); err != nil {
				t.Fatal(err)
			}
		}, seen{Name: "db-password", Status: 404, Code: "SecretNotFound"}, `no secret named "db-password" in the vault`, true},
		{"role unassigned", func(t *testing.T, env *testEnv) {
			if err := env.emu.UnassignRole(vaultName, clientID, azemu.RoleSecretsUser); err != nil {
				t.Fatal(err)
			}
		}, seen{Name: "db-password", Status: 403, Code: "Forbidden"}, "has no role that allows", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, nil)
			tok := env.token(t, "web")
			wantOK(t, env.post(t, tok, request("db-password")))
			tt.revoke(t, env)

			env.clock.Advance(59 * time.Minute)
			if diff := cmp.Diff([]seen{{Name: "db-password", Value: dbPassword, Age: 3540}}, brief(env.post(t, tok, request("db-password")))); diff != "" {
				t.Errorf("within the TTL (-want +got):\n%s", diff)
			}
			env.clock.Advance(2 * time.Minute)
			refused := env.post(t, tok, request("db-password"))
			if diff := cmp.Diff([]seen{tt.want}, brief(refused)); diff != "" {
				t.Errorf("past the TTL (-want +got):\n%s", diff)
			}
			if p := refused.resp.Secrets[0].Error.Cause; !strings.Contains(p, tt.problem) {
				t.Errorf("problem %q does not say %q", p, tt.problem)
			}
			if got := testutilEntries(env); got != 0 {
				t.Errorf("%v entries after the refusal, want 0 (forgotten)", got)
			}
			env.down.Store(true)
			later := brief(env.post(t, tok, request("db-password")))
			if len(later) != 1 || later[0].Value != "" || later[0].Stale {
				t.Errorf("an outage after the refusal served %+v, want no value", later)
			}
		})
	}
}

func TestLRUEviction(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Options)
	}{
		{"by entries", func(o *Options) { o.MaxEntries = 2 }},
		// big-1 alone is about 2.4 KB with its key: two fit, three do not.
		{"by bytes", func(o *Options) { o.MaxBytes = 3000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, tt.mutate)
			tok := env.token(t, "web")
			first := "db-password"
			if tt.name == "by bytes" {
				first = "big-1"
			}
			wantOK(t, env.post(t, tok, request(first)))
			wantOK(t, env.post(t, tok, request("api-key")))
			wantOK(t, env.post(t, tok, request(first)))   // used: api-key is now the least recently used
			wantOK(t, env.post(t, tok, request("other"))) // evicts api-key
			before := env.kvGets()
			wantOK(t, env.post(t, tok, request(first)))
			if got := env.kvGets() - before; got != 0 {
				t.Errorf("%s, recently used, needed %d reads, want 0", first, got)
			}
			wantOK(t, env.post(t, tok, request("api-key")))
			if got := env.kvGets() - before; got != 1 {
				t.Errorf("api-key, least recently used, needed %d reads, want 1 (evicted)", got)
			}
		})
	}
}

// TestValueTooLarge: a value over MaxValueBytes is an error, not cached.
func TestValueTooLarge(t *testing.T) {
	env := newTestEnv(t, nil)
	if _, err := env.emu.SetSecret(vaultName, "huge", strings.Repeat("v", cacheapi.MaxValueBytes+1), ""); err != nil {
		t.Fatal(err)
	}
	got := brief(env.post(t, env.token(t, "web"), request("huge")))
	if diff := cmp.Diff([]seen{{Name: "huge", Code: cacheapi.CodeValueTooLarge}}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if n := testutilEntries(env); n != 0 {
		t.Errorf("%v entries, want 0", n)
	}
}
