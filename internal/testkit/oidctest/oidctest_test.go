package oidctest_test

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

func newIssuer(t *testing.T) *oidctest.Issuer {
	t.Helper()
	iss, err := oidctest.New(oidctest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

func client(iss *oidctest.Issuer) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: iss.CertPool()}}}
}

func get(t *testing.T, hc *http.Client, url, accept string, v any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestDiscoveryAndJWKS(t *testing.T) {
	iss := newIssuer(t)
	hc := client(iss)
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if code := get(t, hc, iss.URL()+"/.well-known/openid-configuration", "application/json", &disc); code != 200 {
		t.Fatalf("discovery: %d", code)
	}
	if diff := cmp.Diff(iss.URL(), disc.Issuer); diff != "" {
		t.Errorf("issuer (-want +got):\n%s", diff)
	}
	// Like kube-apiserver's advertise address: another name, same server.
	if !strings.HasPrefix(disc.JWKSURI, "https://localhost:") || !strings.HasSuffix(disc.JWKSURI, "/openid/v1/jwks") {
		t.Errorf("jwks_uri = %s", disc.JWKSURI)
	}
	cases := []struct {
		accept string
		want   int
	}{
		{"application/json", 406},
		{"", 406},
		{"application/jwk-set+json", 200},
		{"application/jwk-set+json, application/json", 200},
		{"application/json;q=0.9, application/jwk-set+json", 200},
	}
	for _, c := range cases {
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		got := get(t, hc, disc.JWKSURI, c.accept, &set)
		if got != c.want {
			t.Errorf("Accept %q: %d, want %d", c.accept, got, c.want)
		}
		if got == 200 && (len(set.Keys) != 1 || set.Keys[0]["kid"] != iss.KeyID() || set.Keys[0]["alg"] != "RS256") {
			t.Errorf("keys = %v", set.Keys)
		}
	}
	if diff := cmp.Diff([]int64{3, 2}, []int64{iss.JWKSRequests(), iss.NotAcceptable()}); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

func decodePart(t *testing.T, tok string, i int, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestMintAndRotate(t *testing.T) {
	iss := newIssuer(t)
	now := time.Unix(1_800_000_000, 0)
	path := filepath.Join(t.TempDir(), "token")
	tok, err := iss.WriteToken(path, oidctest.Claims{Namespace: "apps", ServiceAccount: "web", IssuedAt: now, Lifetime: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != tok {
		t.Fatalf("token file: %q, %v", b, err)
	}
	var hdr map[string]string
	var claims map[string]any
	decodePart(t, tok, 0, &hdr)
	decodePart(t, tok, 1, &claims)
	if diff := cmp.Diff(map[string]string{"alg": "RS256", "kid": iss.KeyID()}, hdr); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	delete(claims, "kubernetes.io")
	want := map[string]any{
		"iss": iss.URL(), "sub": "system:serviceaccount:apps:web", "aud": []any{"api://AzureADTokenExchange"},
		"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(2 * time.Hour).Unix()),
	}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}

	old := iss.KeyID()
	kid, err := iss.Rotate(true)
	if err != nil {
		t.Fatal(err)
	}
	if kid == old || iss.KeyID() != kid {
		t.Errorf("Rotate: kid %s, old %s, current %s", kid, old, iss.KeyID())
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	get(t, client(iss), iss.JWKSURL(), "application/jwk-set+json", &set)
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k["kid"])
	}
	if diff := cmp.Diff([]string{kid, old}, kids); diff != "" {
		t.Errorf("kids after Rotate(keepOld) (-want +got):\n%s", diff)
	}
	if _, err := iss.Mint(oidctest.Claims{}); err == nil {
		t.Error("Mint without a subject succeeded")
	}
}
