package cacheserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/cacheapi"
)

// plantBig stores n secrets big-N of size bytes of '<' (a character JSON
// escapes to six bytes when HTML escaping is on) and returns their names.
func (env *testEnv) plantBig(t *testing.T, n, size int) []string {
	t.Helper()
	var names []string
	for i := range n {
		name := fmt.Sprintf("angle-%d", i)
		if _, err := env.emu.SetSecret(vaultName, name, strings.Repeat("<", size), "text/plain"); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// gauge reads a gauge of the cache's registry by name; found is false when
// the cache has no such metric.
func (env *testEnv) gauge(t *testing.T, name string) (v float64, found bool) {
	t.Helper()
	mfs, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var m *dto.Metric
			if len(mf.GetMetric()) > 0 {
				m = mf.GetMetric()[0]
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestNoAmplification: a request names each secret once, and a value's
// characters are not HTML-escaped: a 3 KB request of 50 copies of one
// 25 KB reference drew a 7.7 MB answer.
func TestNoAmplification(t *testing.T) {
	env := newTestEnv(t, nil)
	env.plantBig(t, 1, 25<<10)
	web := env.token(t, "web")

	dup := request()
	for range cacheapi.MaxSecretsPerRequest {
		dup.Secrets = append(dup.Secrets, cacheapi.SecretRef{Vault: vaultURL, Name: "angle-0"})
	}
	body, _ := json.Marshal(dup)
	r := httptest.NewRequest(http.MethodPost, cacheapi.Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+web)
	w := httptest.NewRecorder()
	env.srv.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "secrets[1] repeats secrets[0] (angle-0 of homelab-kv.vault.azure.net)") {
		t.Errorf("%d references to one secret: %d, %d bytes answered from a %d-byte request, want 400 naming the repeat",
			len(dup.Secrets), w.Code, w.Body.Len(), len(body))
	}

	r = httptest.NewRequest(http.MethodPost, cacheapi.Path, bytes.NewReader(mustJSON(t, request("angle-0"))))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+web)
	w = httptest.NewRecorder()
	env.srv.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("one reference: %d %s", w.Code, w.Body.String())
	}
	if n := w.Body.Len(); n > 25<<10+1<<10 || !strings.Contains(w.Body.String(), strings.Repeat("<", 100)) {
		t.Errorf("a value of 25 KiB of '<' took %d bytes in the answer, want it unescaped (under 26 KiB)", n)
	}
	if got := w.Header().Get("Content-Length"); got != fmt.Sprint(w.Body.Len()) {
		t.Errorf("Content-Length %q for %d bytes", got, w.Body.Len())
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAnswerCapped: one answer never passes cacheapi.MaxResponseBytes;
// the results past it say so, and the agent reads them directly.
func TestAnswerCapped(t *testing.T) {
	env := newTestEnv(t, nil)
	names := env.plantBig(t, 50, 30<<10) // with '"' framing: 50 x 30 KiB = 1.5 MiB < 2 MiB
	for i := range 10 {
		// Control characters are escaped to six bytes even without HTML
		// escaping: ten of these pass the cap.
		if _, err := env.emu.SetSecret(vaultName, names[i], strings.Repeat("\x01", 30<<10), "text/plain"); err != nil {
			t.Fatal(err)
		}
	}
	web := env.token(t, "web")
	body := mustJSON(t, request(names...))
	r := httptest.NewRequest(http.MethodPost, cacheapi.Path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+web)
	w := httptest.NewRecorder()
	env.srv.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if w.Body.Len() > cacheapi.MaxResponseBytes {
		t.Errorf("an answer of %d bytes, over the limit of %d", w.Body.Len(), cacheapi.MaxResponseBytes)
	}
	var resp cacheapi.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	values, tooLarge := 0, 0
	for _, res := range resp.Secrets {
		switch {
		case res.Error == nil:
			values++
		case res.Error.Code == cacheapi.CodeAnswerTooLarge && res.Error.Status == 0:
			tooLarge++
		default:
			t.Errorf("%s: %+v", res.Ref.Name, res.Error)
		}
	}
	if len(resp.Secrets) != 50 || values == 0 || tooLarge == 0 {
		t.Errorf("%d results: %d values, %d %s; want 50, some of each", len(resp.Secrets), values, tooLarge, cacheapi.CodeAnswerTooLarge)
	}
}

// slowReader sends one request and never reads the answer.
func slowReader(t *testing.T, addr, token string, body []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: cache\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		cacheapi.Path, token, len(body))
	if _, err := c.Write(append([]byte(req), body...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// smallSendBuffers gives every accepted connection a 4 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// TestSlowReadersBounded: callers that never read their answers hold no
// more than MaxAnswerBytesInFlight between them, and give it back within
// WriteTimeout; the callers that found no room are refused with 503.
func TestSlowReadersBounded(t *testing.T) {
	const inFlight = 2 << 20
	env := newTestEnv(t, func(o *Options) {
		o.MaxAnswerBytesInFlight, o.WriteTimeout, o.ReviewWait = inFlight, time.Second, 300*time.Millisecond
		o.RatePerSecond, o.RateBurst = 1000, 1000
	})
	names := env.plantBig(t, 25, 30<<10) // 750 KiB an answer
	web := env.token(t, "web")
	wantOK(t, env.post(t, web, request(names...))) // cached: the slow readers are hits
	var handlers, most atomic.Int32
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := handlers.Add(1)
		defer handlers.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		env.srv.ServeHTTP(w, r)
	}))
	// Small fixed socket buffers on the server's side too: with the
	// kernel's autotuned send buffer (up to net.ipv4.tcp_wmem's 4 MiB) a
	// 750 KiB answer fits in it, the write returns at once, and no caller
	// ever waits for room, on some machines and not others.
	ts.Listener = smallSendBuffers{ts.Listener}
	ts.Start()
	defer ts.Close()

	body := mustJSON(t, request(names...))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var peak float64
	var sawGauge bool
	var mu sync.Mutex
	sample := func() {
		v, ok := env.gauge(t, "kvinject_cache_answer_bytes_in_flight")
		mu.Lock()
		defer mu.Unlock()
		sawGauge = sawGauge || ok
		peak = max(peak, v)
	}
	for range 12 {
		conns = append(conns, slowReader(t, ts.Listener.Addr().String(), web, body))
		sample()
	}
	// Every handler ends within WriteTimeout (and the wait for room), the
	// clients still connected and reading nothing.
	deadline := time.Now().Add(5 * time.Second)
	for handlers.Load() > 0 && time.Now().Before(deadline) {
		sample()
		time.Sleep(5 * time.Millisecond)
	}
	if n := handlers.Load(); n > 0 {
		t.Errorf("%d handlers still writing to clients that do not read, 5 s on (at most %d at once)", n, most.Load())
	}
	if !sawGauge {
		t.Fatal("no kvinject_cache_answer_bytes_in_flight: the answers in flight are not accounted")
	}
	if peak > inFlight {
		t.Errorf("answers of %.0f bytes held at once, over MaxAnswerBytesInFlight %d", peak, inFlight)
	}
	if v, _ := env.gauge(t, "kvinject_cache_answer_bytes_in_flight"); v != 0 {
		t.Errorf("%.0f answer bytes still held after every handler ended", v)
	}
	busy := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
			busy++
		}
	}
	if busy == 0 || env.refusals(reasonBusy) == 0 {
		t.Errorf("no caller refused busy (%d answers of 750 KiB against room for %d bytes)", len(conns), inFlight)
	}
	t.Logf("peak %.0f bytes held; %d of %d refused busy; %d handlers at once", peak, busy, len(conns), most.Load())
}

// TestRequestsPerNamespaceBounded: one namespace's requests answered at
// once are bounded; another namespace is answered meanwhile.
func TestRequestsPerNamespaceBounded(t *testing.T) {
	env := newTestEnv(t, func(o *Options) {
		o.MaxRequestsPerNamespace, o.ReviewWait = 1, 200*time.Millisecond
	})
	web, worker, loader := env.token(t, "web"), env.token(t, "worker"), env.tokenIn(t, "batch", "loader")
	env.emu.SetKnobs(azemu.Knobs{RequestLatency: 1500 * time.Millisecond})
	held := make(chan answer, 1)
	go func() { held <- env.post(t, web, request("db-password")) }() // a miss: holds apps' slot
	time.Sleep(300 * time.Millisecond)
	a := env.post(t, worker, request("db-password"))
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.refusal, "requests of namespace apps are being answered") ||
		a.header.Get("Retry-After") == "" {
		t.Errorf("a second request of namespace apps: %d %q, want 503 namespace-busy with Retry-After", a.status, a.refusal)
	}
	wantOK(t, env.post(t, loader, request("db-password")))
	wantOK(t, <-held)
}
