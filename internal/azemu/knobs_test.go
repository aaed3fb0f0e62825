package azemu_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
)

// TestFaultsAreRetried scripts failures that azcore's retry policy must get
// through; the per-status counters prove the faults really happened.
func TestFaultsAreRetried(t *testing.T) {
	cases := []struct {
		name       string
		class      azemu.Class
		n          int
		fault      azemu.Fault
		wantStatus map[int]int64 // for class
		minElapsed time.Duration
	}{
		{"429 without Retry-After", azemu.ClassKVGet, 2, azemu.Fault{Kind: azemu.FaultThrottle}, map[int]int64{429: 2, 200: 1}, 0},
		{"429 with Retry-After", azemu.ClassKVGet, 1, azemu.Fault{Kind: azemu.FaultThrottle, RetryAfter: time.Second}, map[int]int64{429: 1, 200: 1}, time.Second},
		{"503 on kv-get", azemu.ClassKVGet, 1, azemu.Fault{Kind: azemu.FaultUnavailable}, map[int]int64{503: 1, 200: 1}, 0},
		{"503 on token", azemu.ClassToken, 2, azemu.Fault{Kind: azemu.FaultUnavailable}, map[int]int64{503: 2, 200: 1}, 0},
		{"429 on token", azemu.ClassToken, 1, azemu.Fault{Kind: azemu.FaultThrottle}, map[int]int64{429: 1, 200: 1}, 0},
		// A reset leaves no status: the request is simply counted.
		{"connection reset on kv-get", azemu.ClassKVGet, 1, azemu.Fault{Kind: azemu.FaultReset}, map[int]int64{200: 1}, 0},
		{"connection reset on token", azemu.ClassToken, 1, azemu.Fault{Kind: azemu.FaultReset}, map[int]int64{200: 1}, 0},
	}
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					cl := f.client(t, m) // fresh credential: token classes are exercised
					f.emu.ResetStats()
					f.emu.FailNext(c.class, c.n, c.fault)
					start := time.Now()
					resp, err := cl.GetSecret(testCtx(t), pgSecret, "", nil)
					elapsed := time.Since(start)
					if err != nil {
						t.Fatalf("GetSecret through %d %s faults: %v", c.n, c.fault.Kind, err)
					}
					if *resp.Value != pgValue {
						t.Error("wrong value")
					}
					st := f.emu.Stats()
					if diff := cmp.Diff(c.wantStatus, st.Classes[c.class].Status); diff != "" {
						t.Errorf("%s statuses (-want +got):\n%s", c.class, diff)
					}
					if diff := cmp.Diff(map[azemu.FaultKind]int64{c.fault.Kind: int64(c.n)}, st.Faults); diff != "" {
						t.Errorf("fault counts (-want +got):\n%s", diff)
					}
					if elapsed < c.minElapsed {
						t.Errorf("took %v, want >= %v (Retry-After honoured)", elapsed, c.minElapsed)
					}
				})
			}
		})
	}
}

func TestFaultRateIsSeeded(t *testing.T) {
	run := func() []int64 {
		f := newFixture(t, func(o *azemu.Options) {
			o.Seed = 42
			o.Knobs = azemu.Knobs{FaultRate: 0.2, RateFaults: []azemu.Fault{{Kind: azemu.FaultThrottle}, {Kind: azemu.FaultUnavailable}}, RateClasses: []azemu.Class{azemu.ClassKVGet}}
		})
		c := f.client(t, directMode)
		for range 8 {
			if _, err := c.GetSecret(testCtx(t), pgSecret, "", nil); err != nil {
				t.Fatalf("GetSecret with 20%% faults and 3 retries: %v\nstats: %+v", err, f.emu.Stats())
			}
		}
		st := f.emu.Stats()
		return []int64{st.Faults[azemu.FaultThrottle], st.Faults[azemu.FaultUnavailable], st.Classes[azemu.ClassKVGet].Requests, st.Classes[azemu.ClassToken].Status[429]}
	}
	first, second := run(), run()
	if first[0]+first[1] == 0 {
		t.Errorf("no faults injected at rate 0.2: %v", first)
	}
	if first[3] != 0 {
		t.Errorf("token class got faults though RateClasses is kv-get only: %v", first)
	}
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", diff)
	}
}

func TestCountersAndBytes(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			c := f.client(t, m)
			if _, err := c.GetSecret(testCtx(t), pgSecret, "", nil); err != nil {
				t.Fatal(err)
			}
			st := f.emu.Stats()
			assertion, err := readFile(f.tokenF)
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				name string
				ok   bool
			}{
				{"kv-get bytes out >= value", st.Classes[azemu.ClassKVGet].BytesOut > int64(len(pgValue))},
				{"kv-get bytes in == 0 (GET)", st.Classes[azemu.ClassKVGet].BytesIn == 0},
				{"token bytes in >= assertion", st.Classes[azemu.ClassToken].BytesIn > int64(len(assertion))},
				{"token bytes out > 0", st.Classes[azemu.ClassToken].BytesOut > 0},
				{"challenge counted", st.Classes[azemu.ClassKVChallenge].Status[401] == 1},
				{"issuer discovery fetched", st.Classes[azemu.ClassIssuerDiscovery].Requests == 1},
				{"issuer jwks fetched", st.Classes[azemu.ClassIssuerJWKS].Status[200] == 1},
				{"connections", st.Connections >= 2},
				{"raw bytes exceed bodies", st.ConnBytesOut > st.Classes[azemu.ClassKVGet].BytesOut+st.Classes[azemu.ClassToken].BytesOut},
				{"raw bytes in", st.ConnBytesIn > st.Classes[azemu.ClassToken].BytesIn},
				{"tokens issued", st.TokensIssued == 1},
				{"one sign-in, by its subject", len(st.SignIns) == 1 && st.SignIns[clientID+" system:serviceaccount:"+namespace+":"+saName] == 1},
				{"proxy connects", (m == proxyMode) == (st.ProxyConnects >= 2)},
			}
			for _, ch := range checks {
				if !ch.ok {
					t.Errorf("%s: false; stats %+v", ch.name, st)
				}
			}
			f.emu.ResetStats()
			if diff := cmp.Diff(azemu.Stats{Classes: map[azemu.Class]azemu.ClassStats{}, Faults: map[azemu.FaultKind]int64{}}, f.emu.Stats()); diff != "" {
				t.Errorf("after ResetStats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLatencyKnobs(t *testing.T) {
	const reqLat, connLat = 150 * time.Millisecond, 200 * time.Millisecond
	f := newFixture(t)
	c := f.client(t, proxyMode)
	ctx := testCtx(t)
	if _, err := c.GetSecret(ctx, pgSecret, "", nil); err != nil { // token cached, connection open
		t.Fatal(err)
	}
	f.emu.SetKnobs(azemu.Knobs{RequestLatency: reqLat, ConnLatency: connLat})
	start := time.Now()
	if _, err := c.GetSecret(ctx, pgSecret, "", nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < reqLat || d > reqLat+5*time.Second {
		t.Errorf("warm request took %v, want about %v", d, reqLat)
	}
	// A new client needs a new connection: connection latency plus the
	// request latency of challenge, instance discovery, metadata, token and get.
	fresh := f.client(t, proxyMode)
	start = time.Now()
	if _, err := fresh.GetSecret(ctx, pgSecret, "", nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < connLat+4*reqLat || d > 10*time.Second {
		t.Errorf("cold request took %v, want >= %v", d, connLat+4*reqLat)
	}
	if diff := cmp.Diff(azemu.Knobs{RequestLatency: reqLat, ConnLatency: connLat}, f.emu.Knobs()); diff != "" {
		t.Errorf("Knobs() (-want +got):\n%s", diff)
	}
}

func TestBandwidthLimit(t *testing.T) {
	const bps = 200_000 // the reference link
	big := strings.Repeat("x", 10_000)
	f := newFixture(t)
	if _, err := f.emu.SetSecret(vaultName, "big", big, ""); err != nil {
		t.Fatal(err)
	}
	c := f.client(t, proxyMode)
	ctx := testCtx(t)
	if _, err := c.GetSecret(ctx, pgSecret, "", nil); err != nil {
		t.Fatal(err)
	}
	f.emu.SetKnobs(azemu.Knobs{BandwidthBPS: bps})
	start := time.Now()
	resp, err := c.GetSecret(ctx, "big", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	// 10 kB at 200 kbit/s is 0.4 s before headers and TLS overhead.
	minD := time.Duration(len(big)*8) * time.Second / bps
	if d < minD || d > 10*time.Second {
		t.Errorf("10 kB at %d bit/s took %v, want >= %v", bps, d, minD)
	}
	if *resp.Value != big {
		t.Error("value corrupted")
	}
	f.emu.SetKnobs(azemu.Knobs{})
	start = time.Now()
	if _, err := c.GetSecret(ctx, "big", "", nil); err != nil {
		t.Fatal(err)
	}
	if d2 := time.Since(start); d2 > d {
		t.Errorf("unlimited took %v, longer than the limited %v", d2, d)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	for _, m := range modes {
		c := f.client(t, m)
		if _, err := c.GetSecret(ctx, pgSecret, "", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSecret(ctx, pgSecret, "0123456789abcdef0123456789abcdef", nil); err != nil {
			t.Fatal(err)
		}
		_, _ = c.GetSecret(ctx, "disabled-secret", "", nil)
		_, _ = f.secrets(t, m, vaultName, f.credential(t, m, noRoleID, f.tokenF)).GetSecret(ctx, pgSecret, "", nil)
		_, _ = f.secrets(t, m, vaultName, f.credential(t, m, unknownID, f.tokenF)).GetSecret(ctx, pgSecret, "", nil)
	}
	if _, err := f.emu.SetSecret(vaultName, pgSecret, "runtime-value-123", ""); err != nil {
		t.Fatal(err)
	}
	assertion, err := readFile(f.tokenF)
	if err != nil {
		t.Fatal(err)
	}
	access := f.accessToken(t, proxyMode)
	logs := f.logs.String()
	forbidden := map[string]string{
		"secret value":     "louiselane",
		"secret JSON":      pgValue,
		"old version":      "old-password",
		"disabled value":   "nope",
		"runtime value":    "runtime-value-123",
		"assertion":        assertion,
		"assertion sig":    assertion[strings.LastIndex(assertion, ".")+1:],
		"access token":     access,
		"access token sig": access[strings.LastIndex(access, ".")+1:],
	}
	for what, s := range forbidden {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain the %s", what)
		}
	}
	// The logs must still be useful.
	for _, want := range []string{"class=token", "clientID=" + clientID, "aadsts=AADSTS700016", "kvError=ForbiddenByRbac", "kvError=SecretDisabled", "secret=app-pgsql", "vault=homelab-kv", "tenant=" + tenantID} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}
