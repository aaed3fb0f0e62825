package azemu_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

var vaultScope = policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}

// aadBody is the Entra ID error body.
type aadBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri"`
}

// aadFailure extracts what a test compares from an authentication error.
type aadFailure struct {
	Status     int
	Error      string
	Codes      []int
	DescPrefix bool // description starts with "AADSTS<code>: "
	TraceLine  bool // "\r\nTrace ID: " present
}

func authFailure(t *testing.T, err error) (aadFailure, aadBody) {
	t.Helper()
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) {
		t.Fatalf("error %v (%T) is not an AuthenticationFailedError", err, err)
	}
	if afe.RawResponse == nil {
		t.Fatalf("AuthenticationFailedError without RawResponse: %v", err)
	}
	payload, perr := runtime.Payload(afe.RawResponse)
	if perr != nil {
		t.Fatal(perr)
	}
	var b aadBody
	if err := json.Unmarshal(payload, &b); err != nil {
		t.Fatalf("body %q: %v", payload, err)
	}
	code := 0
	if len(b.ErrorCodes) > 0 {
		code = b.ErrorCodes[0]
	}
	return aadFailure{
		Status:     afe.RawResponse.StatusCode,
		Error:      b.Error,
		Codes:      b.ErrorCodes,
		DescPrefix: strings.HasPrefix(b.ErrorDescription, "AADSTS"+itoa(code)+": "),
		TraceLine:  strings.Contains(b.ErrorDescription, "\r\nTrace ID: "+b.TraceID+"\r\nCorrelation ID: "+b.CorrelationID+"\r\nTimestamp: "),
	}, b
}

func itoa(n int) string { return strconv.Itoa(n) }

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

func TestTokenErrors(t *testing.T) {
	type tc struct {
		name   string
		client string
		claims oidctest.Claims
		// setup runs before the token is minted; it may change the
		// emulator and return extra claims tweaks.
		setup  func(t *testing.T, f *fixture)
		tamper func(tok string) string
		want   aadFailure
		// descHas must appear in the description.
		descHas string
	}
	std := oidctest.Claims{Namespace: namespace, ServiceAccount: saName}
	withClaims := func(mod func(*oidctest.Claims)) oidctest.Claims { c := std; mod(&c); return c }
	invalidClient := func(code int) aadFailure {
		return aadFailure{Status: 401, Error: "invalid_client", Codes: []int{code}, DescPrefix: true, TraceLine: true}
	}
	cases := []tc{
		{
			name: "unknown client 700016", client: unknownID, claims: std,
			want:    aadFailure{Status: 400, Error: "unauthorized_client", Codes: []int{700016}, DescPrefix: true, TraceLine: true},
			descHas: "Application with identifier '" + unknownID + "' was not found in the directory '" + tenantID + "'",
		},
		{
			name: "issuer mismatch 700211", client: clientID,
			claims:  withClaims(func(c *oidctest.Claims) { c.Issuer = "https://issuer.example.com" }),
			want:    invalidClient(700211),
			descHas: "presented assertion issuer 'https://issuer.example.com'",
		},
		{
			name: "issuer trailing slash 700211", client: clientID,
			setup:  func(*testing.T, *fixture) {},
			claims: std, // patched below to add "/"
			want:   invalidClient(700211),
		},
		{
			name: "audience mismatch 700212", client: clientID,
			claims:  withClaims(func(c *oidctest.Claims) { c.Audience = []string{"api://Other"} }),
			want:    invalidClient(700212),
			descHas: "presented assertion audience 'api://Other'",
		},
		{
			name: "subject mismatch 700213", client: clientID,
			claims:  withClaims(func(c *oidctest.Claims) { c.ServiceAccount = "other" }),
			want:    invalidClient(700213),
			descHas: "presented assertion subject 'system:serviceaccount:apps:other'",
		},
		{
			name: "expired 700024", client: clientID,
			claims:  withClaims(func(c *oidctest.Claims) { c.IssuedAt = time.Now().Add(-2 * time.Hour) }),
			want:    invalidClient(700024),
			descHas: "Client assertion is not within its valid time range. Current time: ",
		},
		{
			name: "not yet valid 700024", client: clientID,
			claims: withClaims(func(c *oidctest.Claims) { c.NotBefore = time.Now().Add(time.Hour) }),
			want:   invalidClient(700024),
		},
		{
			name: "unknown kid 7000272", client: clientID,
			claims:  withClaims(func(c *oidctest.Claims) { c.KeyID = "no-such-kid" }),
			want:    invalidClient(7000272),
			descHas: "The certificate with identifier no-such-kid used to sign the federated credential could not be found in the metadata of identity provider https://127.0.0.1:",
		},
		{
			name: "bad signature 700027", client: clientID, claims: std,
			tamper: func(tok string) string {
				i := strings.LastIndex(tok, ".") + 10
				c := byte('A')
				if tok[i] == 'A' {
					c = 'B'
				}
				return tok[:i] + string(c) + tok[i+1:]
			},
			want: invalidClient(700027),
		},
		{
			name: "issuer unreachable 50166", client: clientID,
			setup: func(t *testing.T, f *fixture) {
				// Port 1 on loopback: nothing listens, the dial fails fast.
				if err := f.emu.AddFederatedCredential(clientID, azemu.FederatedCredential{Name: "dead", Issuer: "https://127.0.0.1:1", Subject: "system:serviceaccount:apps:web"}); err != nil {
					t.Fatal(err)
				}
			},
			claims:  withClaims(func(c *oidctest.Claims) { c.Issuer = "https://127.0.0.1:1" }),
			want:    aadFailure{Status: 400, Error: "invalid_request", Codes: []int{50166}, DescPrefix: true, TraceLine: true},
			descHas: "Request to External OIDC endpoint failed.",
		},
	}
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if c.setup != nil {
						c.setup(t, f)
					}
					if strings.Contains(c.name, "trailing slash") {
						c.claims.Issuer = f.iss.URL() + "/"
					}
					tok, err := f.iss.Mint(c.claims)
					if err != nil {
						t.Fatal(err)
					}
					if c.tamper != nil {
						tok = c.tamper(tok)
					}
					path := filepath.Join(t.TempDir(), "token")
					if err := writeFile(path, tok); err != nil {
						t.Fatal(err)
					}
					cred := f.credential(t, m, c.client, path)
					_, err = cred.GetToken(testCtx(t), vaultScope)
					if err == nil {
						t.Fatal("GetToken succeeded, want an error")
					}
					got, body := authFailure(t, err)
					if diff := cmp.Diff(c.want, got); diff != "" {
						t.Errorf("failure (-want +got):\n%s\nbody: %+v", diff, body)
					}
					if c.descHas != "" && !strings.Contains(body.ErrorDescription, c.descHas) {
						t.Errorf("description %q does not contain %q", body.ErrorDescription, c.descHas)
					}
					if !strings.HasSuffix(body.ErrorURI, "/error?code="+itoa(c.want.Codes[0])) {
						t.Errorf("error_uri = %q", body.ErrorURI)
					}
				})
			}
		})
	}
}

// TestTokenErrorThroughSecretsClient checks that an Entra failure surfaces
// from azsecrets as the same AuthenticationFailedError.
func TestTokenErrorThroughSecretsClient(t *testing.T) {
	f := newFixture(t)
	c := f.secrets(t, proxyMode, vaultName, f.credential(t, proxyMode, unknownID, f.tokenF))
	_, err := c.GetSecret(testCtx(t), pgSecret, "", nil)
	got, _ := authFailure(t, err)
	if diff := cmp.Diff([]int{700016}, got.Codes); diff != "" {
		t.Errorf("codes (-want +got):\n%s", diff)
	}
}

func TestUnknownTenant(t *testing.T) {
	f := newFixture(t)
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: f.clientOptions(proxyMode),
		ClientID:      clientID, TenantID: "99999999-2222-3333-4444-555555555555", TokenFilePath: f.tokenF,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cred.GetToken(testCtx(t), vaultScope)
	if err == nil || !strings.Contains(err.Error(), "AADSTS90002") {
		t.Fatalf("GetToken error = %v, want AADSTS90002", err)
	}
}

func TestJWKSCacheAndRotation(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	get := func(tokenFile string) error {
		_, err := f.credential(t, directMode, clientID, tokenFile).GetToken(ctx, vaultScope)
		return err
	}
	if err := get(f.tokenF); err != nil {
		t.Fatal(err)
	}
	if err := get(f.tokenF); err != nil {
		t.Fatal(err)
	}
	if got := f.iss.JWKSRequests(); got != 1 {
		t.Errorf("JWKS fetched %d times for two tokens, want 1 (cached)", got)
	}
	if got := f.iss.NotAcceptable(); got != 0 {
		t.Errorf("issuer refused %d JWKS requests with 406; the emulator must send Accept: application/jwk-set+json", got)
	}
	if _, err := f.iss.Rotate(false); err != nil {
		t.Fatal(err)
	}
	rotated := filepath.Join(t.TempDir(), "token")
	if _, err := f.iss.WriteToken(rotated, oidctest.Claims{Namespace: namespace, ServiceAccount: saName}); err != nil {
		t.Fatal(err)
	}
	got, _ := authFailure(t, get(rotated))
	if diff := cmp.Diff([]int{7000272}, got.Codes); diff != "" {
		t.Errorf("with stale cache (-want +got):\n%s", diff)
	}
	f.emu.FlushJWKSCache()
	if err := get(rotated); err != nil {
		t.Fatalf("after flush: %v", err)
	}
	if got := f.iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKS fetched %d times, want 2", got)
	}
}

func TestRuntimeIdentityChanges(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	codeOf := func() []int {
		_, err := f.credential(t, directMode, clientID, f.tokenF).GetToken(ctx, vaultScope)
		if err == nil {
			return nil
		}
		got, _ := authFailure(t, err)
		return got.Codes
	}
	steps := []struct {
		name string
		do   func() error
		want []int
	}{
		{"initial", func() error { return nil }, nil},
		{"remove credential", func() error { return f.emu.RemoveFederatedCredential(clientID, "apps-web") }, []int{700211}},
		{"add credential back", func() error {
			return f.emu.AddFederatedCredential(clientID, azemu.FederatedCredential{Name: "again", Issuer: f.iss.URL(), Subject: "system:serviceaccount:apps:web"})
		}, nil},
		{"remove identity", func() error { return f.emu.RemoveIdentity(clientID) }, []int{700016}},
		{"add identity", func() error {
			return f.emu.AddIdentity(azemu.Identity{ClientID: clientID, Tenant: tenantID, FederatedCredentials: []azemu.FederatedCredential{{Name: "x", Issuer: f.iss.URL(), Subject: "system:serviceaccount:apps:web"}}})
		}, nil},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, codeOf()); diff != "" {
			t.Errorf("%s: AADSTS codes (-want +got):\n%s", s.name, diff)
		}
	}
	if err := f.emu.RemoveIdentity(unknownID); !errors.Is(err, azemu.ErrUnknownIdentity) {
		t.Errorf("RemoveIdentity(unknown) = %v, want ErrUnknownIdentity", err)
	}
}

func TestTokenResponseShape(t *testing.T) {
	f := newFixture(t)
	tok, err := f.iss.Mint(oidctest.Claims{Namespace: namespace, ServiceAccount: saName})
	if err != nil {
		t.Fatal(err)
	}
	form := "grant_type=client_credentials&client_id=" + clientID +
		"&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=" + tok +
		"&scope=https%3A%2F%2Fvault.azure.net%2F.default"
	hc := &http.Client{Transport: f.emu.DirectTransport(), Timeout: 10 * time.Second}
	resp, err := hc.Post(f.emu.DirectURL()+"/"+tenantID+"/oauth2/v2.0/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body["access_token"] == "" {
		t.Error("no access_token")
	}
	delete(body, "access_token")
	want := map[string]any{"token_type": "Bearer", "expires_in": 3599.0, "ext_expires_in": 3599.0}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("token response (-want +got):\n%s", diff)
	}
}

// TestJWKSOnUnresolvableHost mimics a kube-apiserver whose discovery
// document advertises a jwks_uri host that only resolves inside the
// cluster; Options.IssuerHosts maps it to the real address.
func TestJWKSOnUnresolvableHost(t *testing.T) {
	iss, err := oidctest.New(oidctest.Options{JWKSHost: "kube-apiserver.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	port := iss.URL()[strings.LastIndex(iss.URL(), ":")+1:]
	for _, mapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("mapped=%v", mapped), func(t *testing.T) {
			f := newFixture(t, func(o *azemu.Options) {
				o.Config.Identities[0].FederatedCredentials[0].Issuer = iss.URL()
				o.IssuerCAPEM = iss.CAPEM()
				// Unmapped, point it at a closed loopback port rather than
				// let the test do a DNS lookup.
				to := "127.0.0.1:1"
				if mapped {
					to = "127.0.0.1:" + port
				}
				o.IssuerHosts = map[string]string{"kube-apiserver.invalid:" + port: to}
			})
			path := filepath.Join(t.TempDir(), "token")
			if _, err := iss.WriteToken(path, oidctest.Claims{Namespace: namespace, ServiceAccount: saName}); err != nil {
				t.Fatal(err)
			}
			_, err := f.credential(t, directMode, clientID, path).GetToken(testCtx(t), vaultScope)
			if mapped {
				if err != nil {
					t.Fatalf("GetToken: %v", err)
				}
				return
			}
			got, _ := authFailure(t, err)
			if diff := cmp.Diff([]int{50166}, got.Codes); diff != "" {
				t.Errorf("unreachable jwks host (-want +got):\n%s", diff)
			}
		})
	}
}
