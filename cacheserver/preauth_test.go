package cacheserver

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

// TestMalformedTokensTakeNoReview: a bearer token that cannot be a live
// projected token for the exchange audience is refused before any
// TokenReview, so that garbage takes no review slot; the API server stays
// the authority for every other token.
func TestMalformedTokensTakeNoReview(t *testing.T) {
	env := newTestEnv(t, nil)
	mint := func(c oidctest.Claims) string {
		tok, err := env.iss.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		env.tokens = append(env.tokens, tok)
		return tok
	}
	valid := env.token(t, "web")
	parts := strings.Split(valid, ".")
	algNone := base64URLEncode([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	body := mustJSON(t, request("db-password"))
	tests := []struct {
		name, token, reason, text string
	}{
		{"garbage", "not-a-token", reasonNotAJWT, "not a JWT"},
		{"three garbage parts", "a.b.c", reasonNotAJWT, "not a service-account token"},
		{"alg none", algNone, reasonNotAJWT, `no signing algorithm (alg "none")`},
		{"bad signature encoding", parts[0] + "." + parts[1] + ".%%%", reasonNotAJWT, "signature is not base64url"},
		{"too long", parts[0] + "." + parts[1] + "." + strings.Repeat("A", 20<<10), reasonNotAJWT, "over 16384"},
		{"wrong audience", mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web", Audience: []string{"https://kubernetes.default.svc"}}), reasonWrongAudience, "not api://AzureADTokenExchange"},
		{"expired", mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web", IssuedAt: time.Now().Add(-2 * time.Hour), Expiry: time.Now().Add(-time.Hour)}), reasonExpired, "expired at"},
		{"not a ServiceAccount", mint(oidctest.Claims{Subject: "alice@example.com"}), reasonNotServiceAccount, `"alice@example.com" is not a ServiceAccount`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.reviewer.Reviews()
			a := env.postRaw(t, tt.token, body)
			if a.status != http.StatusUnauthorized || !strings.Contains(a.refusal, tt.text) {
				t.Errorf("%d %q, want 401 saying %q", a.status, a.refusal, tt.text)
			}
			if n := env.reviewer.Reviews() - before; n != 0 {
				t.Errorf("%d TokenReviews asked for a token refused on its face", n)
			}
			if !strings.Contains(env.logged(), `"reason"="`+tt.reason+`"`) {
				t.Errorf("no refusal logged with reason %s", tt.reason)
			}
		})
	}
	before := env.reviewer.Reviews()
	wantOK(t, env.post(t, valid, request("db-password")))
	if n := env.reviewer.Reviews() - before; n != 1 {
		t.Errorf("a well-formed token: %d TokenReviews, want 1 (the API server decides)", n)
	}
}

// TestSlowBodyAndRequestsBounded: a client that sends headers and never
// its body holds a request slot until ReadTimeout, no longer; beyond
// MaxConcurrentRequests a request is refused at once, before its body.
func TestSlowBodyAndRequestsBounded(t *testing.T) {
	env := newTestEnv(t, func(o *Options) { o.MaxConcurrentRequests, o.ReadTimeout = 2, 700*time.Millisecond })
	web := env.token(t, "web")
	ts := httptest.NewServer(env.srv)
	defer ts.Close()
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: cache\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{", "/v1/secrets", web)
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond)
	post := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/secrets", strings.NewReader(string(mustJSON(t, request("db-password")))))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+web)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var ref struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&ref)
		return resp.StatusCode, ref.Reason
	}
	if st, reason := post(); st != http.StatusServiceUnavailable || reason != reasonBusy {
		t.Errorf("with 2 slow bodies holding both slots: %d %s, want 503 busy", st, reason)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 408") {
			t.Errorf("a body that never came: answered %q, want 408 within the read timeout", buf[:n])
		}
	}
	if st, _ := post(); st != http.StatusOK {
		t.Errorf("after the slow bodies timed out: %d, want 200", st)
	}
}
