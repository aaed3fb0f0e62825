package cacheserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/testkit/cachetest"
	"github.com/kvinject/kvinject/internal/testkit/emutest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

// TestRefusals: each refusal of the caller has its status, its reason
// (metric and log) and a message that names it.
func TestRefusals(t *testing.T) {
	env := newTestEnv(t, nil)
	web := env.token(t, "web")
	valid, err := json.Marshal(request("db-password"))
	if err != nil {
		t.Fatal(err)
	}
	mint := func(c oidctest.Claims) string {
		tok, err := env.iss.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		env.tokens = append(env.tokens, tok)
		return tok
	}
	wrongAudience := mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web", Audience: []string{"https://kubernetes.default.svc"}})
	notBound := env.token(t, "batch")
	env.reviewer.Set(notBound, authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api://AzureADTokenExchange"},
		User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:batch"}})
	user := env.token(t, "alice")
	env.reviewer.Set(user, authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api://AzureADTokenExchange"},
		User: authenticationv1.UserInfo{Username: "alice@example.com"}})
	tooMany := request()
	for range cacheapi.MaxSecretsPerRequest + 1 {
		tooMany.Secrets = append(tooMany.Secrets, cacheapi.SecretRef{Vault: vaultURL, Name: "db-password"})
	}
	tooManyBody, _ := json.Marshal(tooMany)
	otherHost, _ := json.Marshal(cacheapi.Request{ClientID: clientID, TenantID: tenantID,
		Secrets: []cacheapi.SecretRef{{Vault: "https://attacker.example.com", Name: "db-password"}}})

	tests := []struct {
		name       string
		token      string
		body       []byte
		wantStatus int
		wantReason string
		wantText   string
	}{
		{"no token", "", valid, 401, reasonNoToken, "no bearer token"},
		{"garbage token", "not-a-token", valid, 401, reasonNotAJWT, "not a JWT"},
		{"wrong audience", wrongAudience, valid, 401, reasonWrongAudience, `audience is ["https://kubernetes.default.svc"], not api://AzureADTokenExchange`},
		{"not bound to a pod", notBound, valid, 401, reasonNotPodBound, "not bound to a pod"},
		{"not a ServiceAccount", user, valid, 401, reasonNotServiceAccount, `"alice@example.com", not of a ServiceAccount`},
		{"body too large", web, bytes.Repeat([]byte(" "), cacheapi.MaxRequestBytes+1), 413, reasonTooLarge, "over 65536 bytes"},
		{"garbage body", web, []byte("{secrets"), 400, reasonBadRequest, "not a JSON request"},
		{"two JSON values", web, append(append([]byte{}, valid...), valid...), 400, reasonBadRequest, "more than one JSON value"},
		{"unknown field", web, []byte(`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[],"token":"x"}`), 400, reasonBadRequest, `unknown field "token"`},
		{"too many secrets", web, tooManyBody, 400, reasonBadRequest, "51 secrets asked for, at most 50"},
		{"no secrets", web, []byte(`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[]}`), 400, reasonBadRequest, "no secrets asked for"},
		{"vault of another host", web, otherHost, 400, reasonBadRequest, "is not a Key Vault host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.refusals(tt.wantReason)
			a := env.postRaw(t, tt.token, tt.body)
			if diff := cmp.Diff(tt.wantStatus, a.status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if !strings.Contains(a.refusal, tt.wantText) {
				t.Errorf("refusal %q does not say %q", a.refusal, tt.wantText)
			}
			if got := env.refusals(tt.wantReason) - before; got != 1 {
				t.Errorf("kvinject_cache_refusals_total{reason=%q} rose by %v, want 1", tt.wantReason, got)
			}
			if !strings.Contains(env.logged(), `"reason"="`+tt.wantReason+`"`) {
				t.Errorf("no log line with reason %s:\n%s", tt.wantReason, env.logged())
			}
		})
	}
	if got := env.kvGets(); got != 0 {
		t.Errorf("refused requests made %d upstream reads", got)
	}
}

func TestReviewFailureIsUnavailable(t *testing.T) {
	env := newTestEnv(t, nil)
	env.reviewer.SetError(errors.New("review token: connection refused"))
	a := env.post(t, env.token(t, "web"), request("db-password"))
	if diff := cmp.Diff([]any{503, "the API server could not review the token; retry"}, []any{a.status, a.refusal}); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestRateLimitPerSubject(t *testing.T) {
	env := newTestEnv(t, func(o *Options) { o.RatePerSecond, o.RateBurst = 0.5, 2 })
	web, worker := env.token(t, "web"), env.token(t, "worker")
	var got []int
	for range 3 {
		got = append(got, env.post(t, web, request("db-password")).status)
	}
	limited := env.post(t, web, request("db-password"))
	got = append(got, env.post(t, worker, request("db-password")).status)
	env.clock.Advance(2 * time.Second)
	got = append(got, env.post(t, web, request("db-password")).status)
	if diff := cmp.Diff([]int{200, 200, 429, 200, 200}, got); diff != "" {
		t.Errorf("statuses: web x3, worker, web 2 s later (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("2", limited.header.Get("Retry-After")); diff != "" {
		t.Errorf("Retry-After (-want +got):\n%s", diff)
	}
	if !strings.Contains(limited.refusal, "system:serviceaccount:apps:web made more than 0.5 requests per second (burst 2)") {
		t.Errorf("refusal %q", limited.refusal)
	}
}

// TestProveCaller: the reason of each refusal the API server's answer
// leads to; unverified claims only explain a refusal.
func TestProveCaller(t *testing.T) {
	iss := emutest.Issuer(t)
	now := time.Now()
	mint := func(c oidctest.Claims) string {
		tok, err := iss.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	podBound := mintPodBound(t, iss, now.Add(time.Hour))
	expired := mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web", IssuedAt: now.Add(-2 * time.Hour), Lifetime: time.Hour})
	plain := mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web"})
	ok := authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api://AzureADTokenExchange"},
		User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:web", Extra: map[string]authenticationv1.ExtraValue{
			extraPodName: {"web-1"}, extraPodUID: {"u-1"}}}}
	refused := authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
	tests := []struct {
		name       string
		st         authenticationv1.TokenReviewStatus
		token      string
		wantReason string
		wantText   string
	}{
		{"accepted", ok, plain, "", ""},
		{"expired", refused, expired, reasonExpired, "the token expired at"},
		{"pod gone", refused, podBound, reasonPodGone, "bound to pod apps/web-1 (uid 0d1e2f3a-0000-4000-8000-000000000001), which no longer exists"},
		{"refused, no pod claim", refused, plain, reasonNotAuthenticated, `did not authenticate the token of "system:serviceaccount:apps:web" (API server: invalid bearer token)`},
		{"authenticated for another audience", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: ok.User},
			plain, reasonWrongAudience, "for the audiences"},
		{"username without a name", authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: ok.Audiences,
			User: authenticationv1.UserInfo{Username: "system:serviceaccount:apps:", Extra: ok.User.Extra}}, plain, reasonNotServiceAccount, "not of a ServiceAccount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ref := proveCaller(tt.st, tt.token, now)
			reason, text := "", ""
			if ref != nil {
				reason, text = ref.reason, ref.message
			} else if c.Subject != "system:serviceaccount:apps:web" || c.Pod != "web-1" {
				t.Errorf("caller %+v", c)
			}
			if diff := cmp.Diff(tt.wantReason, reason); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			if !strings.Contains(text, tt.wantText) {
				t.Errorf("message %q does not say %q", text, tt.wantText)
			}
		})
	}
}

// mintPodBound signs a token with the kubernetes.io.pod claim of a bound
// token: oidctest's tokens have none.
func mintPodBound(t *testing.T, iss *oidctest.Issuer, exp time.Time) string {
	t.Helper()
	tok, err := iss.Mint(oidctest.Claims{Namespace: "apps", ServiceAccount: "web", Expiry: exp})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	payload, _ := base64URLDecode(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims["kubernetes.io"].(map[string]any)["pod"] = map[string]string{"name": "web-1", "uid": "0d1e2f3a-0000-4000-8000-000000000001"}
	b, _ := json.Marshal(claims)
	return parts[0] + "." + base64URLEncode(b) + "." + parts[2]
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"defaults", Options{Reviewer: cachetest.NewReviewer()}, ""},
		{"no reviewer", Options{}, "cache options: no token reviewer"},
		{"negative TTL", Options{Reviewer: cachetest.NewReviewer(), TTL: -time.Second}, "cache options: TTL -1s is not positive"},
		{"http authority", Options{Reviewer: cachetest.NewReviewer(), AuthorityHost: "http://login.example.com/"}, `cache options: authority host "http://login.example.com/" must be an https URL with a host and no user, query or fragment, like https://login.microsoftonline.com/`},
		{"negative caps", Options{Reviewer: cachetest.NewReviewer(), MaxEntries: -1, MaxBytes: -1}, "cache options: max entries -1 is not positive\nmax bytes -1 is not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.o)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				if s.o.TTL != DefaultTTL || s.o.MaxStale != DefaultMaxStale || s.o.MaxEntries != DefaultMaxEntries {
					t.Errorf("defaults not filled in: %+v", s.o)
				}
				s.Close()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzHandler: no body makes the handler panic, answer other than 200 or
// 400, or answer a number of results other than the references asked for.
// Upstream is unreachable at once, so every valid reference errs quickly.
func FuzzHandler(f *testing.F) {
	for _, seed := range []string{
		`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[{"vault":"` + vaultURL + `","name":"db-password"}]}`,
		`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[{"vault":"` + vaultURL + `","name":"a","version":"0123456789abcdef0123456789abcdef"}]}`,
		`{"clientID":"x","secrets":[{"vault":"https://a.b","name":"a/b"}]}`,
		`{"secrets":null}`, `[]`, `null`, ``, `{"clientID":1}`,
	} {
		f.Add([]byte(seed))
	}
	noUpstream := func(*http.Request) (*url.URL, error) { return nil, errors.New("no upstream in this test") }
	srv, err := New(Options{Reviewer: cachetest.NewReviewer(), Logger: logr.Discard(),
		Proxy: noUpstream, Retry: &policy.RetryOptions{MaxRetries: -1}, UpstreamTimeout: time.Second,
		RatePerSecond: 1e9, RateBurst: 1e9}) // the fuzzer is one caller, and fast
	if err != nil {
		f.Fatal(err)
	}
	iss := emutest.Issuer(f)
	tok, err := iss.ServiceAccountToken("apps", "web")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, cacheapi.Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusBadRequest:
			var ref cacheapi.Refusal
			if err := json.Unmarshal(w.Body.Bytes(), &ref); err != nil || ref.Error == "" {
				t.Fatalf("400 without a reason: %q", w.Body.String())
			}
		case http.StatusOK:
			var req cacheapi.Request
			_ = json.Unmarshal(body, &req)
			var resp cacheapi.Response
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.Secrets) != len(req.Secrets) {
				t.Fatalf("%d results for %d references", len(resp.Secrets), len(req.Secrets))
			}
			for _, res := range resp.Secrets {
				if res.Error == nil || res.Value != "" {
					t.Fatalf("a value without an upstream: %+v", res)
				}
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	})
}
