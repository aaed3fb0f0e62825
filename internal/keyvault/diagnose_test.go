package keyvault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/spec"
)

const (
	testClient = "11111111-2222-3333-4444-555555555555"
	testTenant = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// fakeJWT builds an unsigned JWT with the given claims JSON.
func fakeJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}

func response(status int, body string, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	req, _ := http.NewRequest(http.MethodPost, "https://login.microsoftonline.com/"+testTenant+"/oauth2/v2.0/token?x=1", nil)
	return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: h,
		Body: io.NopCloser(strings.NewReader(body)), Request: req}
}

func entraBody(code int, errName string) string {
	return fmt.Sprintf(`{"error":%q,"error_description":"AADSTS%d: something.\r\nTrace ID: t1\r\nCorrelation ID: c1\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[%d],"timestamp":"2026-01-01 00:00:00Z","trace_id":"t1","correlation_id":"c1","error_uri":"https://login.microsoftonline.com/error?code=%d"}`,
		errName, code, code, code)
}

func kvBody(code, message, inner string) string {
	if inner != "" {
		return fmt.Sprintf(`{"error":{"code":%q,"message":%q,"innererror":{"code":%q}}}`, code, message, inner)
	}
	return fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, code, message)
}

const testVault = "https://homelab-kv.vault.azure.net"

func testDiag(t *testing.T) Diagnoser {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	jwt := fakeJWT(`{"iss":"https://issuer.example.com/cluster","sub":"system:serviceaccount:app:web","aud":["api://AzureADTokenExchange"],"exp":1767225600,"iat":1767222000,"nbf":1767222000}`)
	if err := os.WriteFile(tokenFile, []byte(jwt+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Diagnoser{
		Identity:     Identity{ClientID: testClient, TenantID: testTenant, TokenFile: tokenFile, AuthorityHost: "https://login.microsoftonline.com/"},
		Timeout:      2 * time.Minute,
		TimeLimit:    "the agent's time limit",
		RaiseTimeout: "raise --timeout",
		Now:          func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
		Claims:       func() (TokenClaims, error) { return ReadTokenClaims(tokenFile) },
	}
}

// TestDiagnoseTimeLimitUnnamed: a Diagnoser whose caller names neither
// its time limit nor how to raise it (the cache's and the credential
// provider's readers) names no program and no flag.
func TestDiagnoseTimeLimitUnnamed(t *testing.T) {
	id := spec.SecretID{Vault: testVault, Name: "app-pgsql"}
	d := Diagnoser{Timeout: 30 * time.Second}
	for _, tc := range []struct {
		name string
		got  Problem
		want string
	}{
		{"read", d.Read(id, fmt.Errorf("x: %w", context.DeadlineExceeded), &Attempts{n: 2, lastStatus: 503}),
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: gave up when the time limit of 30s ran out after 2 attempts; last answer 503. " +
				"Fix: if Key Vault is throttling (429) or unavailable, the kubelet retries the init container; reduce concurrent pod starts; if the vault is unreachable, check egress to homelab-kv.vault.azure.net:443 (network policy, proxy, firewall)"},
		{"transport", d.Transport(context.DeadlineExceeded, "login.microsoftonline.com"),
			"error: gave up when the time limit of 30s ran out while talking to login.microsoftonline.com. Fix: check egress to login.microsoftonline.com:443 (network policy, proxy, firewall)"},
	} {
		if diff := cmp.Diff(tc.want, tc.got.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestDiagnoseAuth(t *testing.T) {
	const claims = `the token has iss="https://issuer.example.com/cluster" sub="system:serviceaccount:app:web" aud="api://AzureADTokenExchange" exp=2026-01-01T00:00:00Z`
	const fedCred = `az identity federated-credential create --identity-name <identity> --resource-group <group> --name kvinject --issuer "https://issuer.example.com/cluster" --subject "system:serviceaccount:app:web" --audiences api://AzureADTokenExchange`
	const where = "error: vault homelab-kv.vault.azure.net, secret app-pgsql: "
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"700211 issuer", &azidentity.AuthenticationFailedError{RawResponse: response(401, entraBody(700211, "invalid_client"))},
			where + "sign-in failed: AADSTS700211: no federated credential of client id " + testClient + " trusts the token's issuer; " + claims + " (trace ID t1, correlation ID c1). " +
				"Fix: add a federated credential whose issuer is exactly the token's iss (case and trailing slash matter): " + fedCred},
		{"700212 audience", &azidentity.AuthenticationFailedError{RawResponse: response(401, entraBody(700212, "invalid_client"))},
			where + "sign-in failed: AADSTS700212: no federated credential of client id " + testClient + " accepts the token's audience; " + claims + " (trace ID t1, correlation ID c1). " +
				"Fix: the federated credential's audience must be api://AzureADTokenExchange, the audience kvinject requests for the projected token"},
		{"700213 subject", &azidentity.AuthenticationFailedError{RawResponse: response(401, entraBody(700213, "invalid_client"))},
			where + "sign-in failed: AADSTS700213: no federated credential of client id " + testClient + " matches the token's subject; " + claims + " (trace ID t1, correlation ID c1). " +
				"Fix: the federated credential's subject must be exactly the pod's system:serviceaccount:<namespace>:<serviceaccount>: " + fedCred},
		{"700016 unknown client", &azidentity.AuthenticationFailedError{RawResponse: response(400, entraBody(700016, "unauthorized_client"))},
			where + "sign-in failed: AADSTS700016: Entra ID has no application with client id " + testClient + " in tenant " + testTenant + " (trace ID t1, correlation ID c1). " +
				"Fix: check the ServiceAccount annotation azure.workload.identity/client-id or the pod annotation kvinject.io/client-id (the client id of the managed identity or app registration), and the tenant id"},
		{"700024 time range", &azidentity.AuthenticationFailedError{RawResponse: response(401, entraBody(700024, "invalid_client"))},
			where + "sign-in failed: AADSTS700024: the service-account token is not within its valid time range (agent clock 2026-01-01T00:00:00Z; " + claims + ") (trace ID t1, correlation ID c1). " +
				"Fix: check the node's clock (NTP) for skew; if the token expired, the kubelet did not refresh it: delete the pod so it gets a fresh token"},
		{"50166 issuer unreachable", &azidentity.AuthenticationFailedError{RawResponse: response(400, entraBody(50166, "invalid_request"))},
			where + "sign-in failed: AADSTS50166: Entra ID could not fetch the token issuer's OIDC discovery document or JWKS; " + claims + " (trace ID t1, correlation ID c1). " +
				"Fix: https://issuer.example.com/cluster/.well-known/openid-configuration and the jwks_uri it names must be public: reachable from the internet over HTTPS with a publicly trusted certificate and no authentication, " +
				"e.g. a static website holding the discovery document and JWKS, as in the reference setup"},
		{"other code", &azidentity.AuthenticationFailedError{RawResponse: response(400, entraBody(12345, "invalid_grant"))},
			where + "sign-in failed: AADSTS12345 (invalid_grant, HTTP 400) (trace ID t1, correlation ID c1). Fix: see https://login.microsoftonline.com/error?code=12345"},
		{"no AADSTS code", &azidentity.AuthenticationFailedError{RawResponse: response(502, "<html>bad gateway</html>")},
			where + "sign-in failed: Entra ID answered HTTP 502 to POST https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token without an AADSTS code. " +
				"Fix: check AZURE_AUTHORITY_HOST (https://login.microsoftonline.com/) and any proxy between the pod and Entra ID"},
		{"code only in the description is not trusted", &azidentity.AuthenticationFailedError{RawResponse: response(401, `{"error":"invalid_client","error_description":"AADSTS700211: x"}`)},
			where + "sign-in failed: Entra ID answered HTTP 401 to POST https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token without an AADSTS code. " +
				"Fix: check AZURE_AUTHORITY_HOST (https://login.microsoftonline.com/) and any proxy between the pod and Entra ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDiag(t)
			got := d.Read(spec.SecretID{Vault: testVault, Name: "app-pgsql"}, tt.err, nil).String()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnostic (-want +got):\n%s", diff)
			}
			jwt, _ := os.ReadFile(d.Identity.TokenFile)
			if strings.Contains(got, strings.TrimSpace(string(jwt))) || strings.Contains(got, strings.Split(string(jwt), ".")[1]) {
				t.Error("the diagnostic holds the token")
			}
		})
	}
}

func TestDiagnoseKeyVault(t *testing.T) {
	const rbacMsg = "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
		"Caller: appid=" + testClient + ";oid=x;iss=https://sts.windows.net/" + testTenant + "/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n" +
		"Resource: '/subscriptions/0000/resourcegroups/rg/providers/microsoft.keyvault/vaults/homelab-kv/secrets/app-pgsql'\r\nAssignment: (not found)\r\nVault: homelab-kv;location=westeurope\r\n"
	latest := spec.SecretID{Vault: testVault, Name: "app-pgsql"}
	versioned := spec.SecretID{Vault: testVault, Name: "app-pgsql", Version: "0123456789abcdef0123456789abcdef"}
	tests := []struct {
		name string
		id   spec.SecretID
		err  error
		at   *Attempts
		want string
	}{
		{"403 ForbiddenByRbac with resource", latest, &azcore.ResponseError{StatusCode: 403, ErrorCode: "Forbidden",
			RawResponse: response(403, kvBody("Forbidden", rbacMsg, "ForbiddenByRbac"))}, nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: Key Vault refused to read the secret (403 Forbidden ForbiddenByRbac): client id " + testClient +
				" has no role that allows Microsoft.KeyVault/vaults/secrets/getSecret/action (the vault's resource id is /subscriptions/0000/resourcegroups/rg/providers/microsoft.keyvault/vaults/homelab-kv). Fix: assign the role \"Key Vault Secrets User\" to client id " + testClient +
				" at scope $(az keyvault show --name homelab-kv --query id -o tsv) (the vault, or one secret below it): az role assignment create --role \"Key Vault Secrets User\" --assignee " +
				testClient + " --scope $(az keyvault show --name homelab-kv --query id -o tsv); role assignments take a few minutes to apply"},
		{"403 ForbiddenByRbac without resource", latest, &azcore.ResponseError{StatusCode: 403, ErrorCode: "Forbidden",
			RawResponse: response(403, kvBody("Forbidden", "Caller is not authorized to perform action on resource.", "ForbiddenByRbac"))}, nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: Key Vault refused to read the secret (403 Forbidden ForbiddenByRbac): client id " + testClient +
				" has no role that allows Microsoft.KeyVault/vaults/secrets/getSecret/action. Fix: assign the role \"Key Vault Secrets User\" to client id " + testClient +
				" at scope $(az keyvault show --name homelab-kv --query id -o tsv) (the vault, or one secret below it): az role assignment create --role \"Key Vault Secrets User\" --assignee " +
				testClient + " --scope $(az keyvault show --name homelab-kv --query id -o tsv); role assignments take a few minutes to apply"},
		{"404 latest", latest, &azcore.ResponseError{StatusCode: 404, ErrorCode: "SecretNotFound",
			RawResponse: response(404, kvBody("SecretNotFound", "A secret with (name/id) app-pgsql was not found in this key vault.", ""))}, nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: no secret named \"app-pgsql\" in the vault (404 SecretNotFound). " +
				"Fix: check the name (az keyvault secret list --vault-name homelab-kv --query [].name) and the vault; a deleted secret can be recovered with az keyvault secret recover"},
		{"404 version", versioned, &azcore.ResponseError{StatusCode: 404, ErrorCode: "SecretNotFound",
			RawResponse: response(404, kvBody("SecretNotFound", "x", ""))}, nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql/0123456789abcdef0123456789abcdef: secret \"app-pgsql\" has no version 0123456789abcdef0123456789abcdef in the vault (404 SecretNotFound). " +
				"Fix: check the versions (az keyvault secret list-versions --vault-name homelab-kv --name app-pgsql --query [].id), or drop the version to read the latest"},
		{"429 after retries", latest, &azcore.ResponseError{StatusCode: 429, ErrorCode: "Throttled",
			RawResponse: response(429, kvBody("Throttled", "Request was not processed because too many requests were received.", ""))}, &Attempts{n: 6, lastStatus: 429, lastCode: "Throttled"},
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: Key Vault kept throttling the requests (429 Throttled) after 6 attempts; last answer 429 Throttled. " +
				"Fix: the vault's request limit was reached: spread pod starts, or fetch fewer secrets per vault; the kubelet retries the init container"},
		{"deadline", latest, fmt.Errorf("x: %w", context.DeadlineExceeded), &Attempts{n: 3, lastStatus: 503},
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: gave up when the agent's time limit of 2m0s ran out after 3 attempts; last answer 503. " +
				"Fix: if Key Vault is throttling (429) or unavailable, the kubelet retries the init container; raise --timeout or reduce concurrent pod starts; if the vault is unreachable, check egress to homelab-kv.vault.azure.net:443 (network policy, proxy, firewall)"},
		{"dns", latest, &url.Error{Op: "Get", URL: testVault, Err: &net.OpError{Op: "dial", Err: &net.DNSError{Name: "homelab-kv.vault.azure.net", Err: "no such host", IsNotFound: true}}}, nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: cannot resolve homelab-kv.vault.azure.net (no such host). Fix: check the vault name or the authority host, and the pod's DNS"},
		{"json error never quoted", latest, fmt.Errorf("unmarshalling type *azsecrets.Secret: %w", &json.SyntaxError{Offset: 3}), nil,
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql: the response from homelab-kv.vault.azure.net was not the JSON expected. Fix: check that no proxy rewrites responses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testDiag(t).Read(tt.id, tt.err, tt.at).String()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnostic (-want +got):\n%s", diff)
			}
			if strings.ContainsAny(got, "\r\n") {
				t.Error("the diagnostic is not one line")
			}
			// The termination message, which get pods shows, never names
			// the subscription.
			if public := testDiag(t).Read(tt.id, tt.err, tt.at).Public(); strings.Contains(public, "/subscriptions/") {
				t.Errorf("the public line names the resource id: %s", public)
			}
		})
	}
}

func TestParseTokenClaims(t *testing.T) {
	tests := []struct {
		name, jwt string
		want      TokenClaims
		wantErr   string
	}{
		{"audience string", fakeJWT(`{"iss":"i","sub":"s","aud":"a","exp":1767225600}`),
			TokenClaims{Issuer: "i", Subject: "s", Audience: []string{"a"}, Expiry: time.Unix(1767225600, 0).UTC()}, ""},
		{"audience list", fakeJWT(`{"iss":"i","sub":"s","aud":["a","b"],"iat":1,"nbf":2,"exp":3}`),
			TokenClaims{Issuer: "i", Subject: "s", Audience: []string{"a", "b"}, IssuedAt: time.Unix(1, 0).UTC(), NotBefore: time.Unix(2, 0).UTC(), Expiry: time.Unix(3, 0).UTC()}, ""},
		{"not a JWT", "secret-token-value", TokenClaims{}, "the token is not a JWT (1 dot-separated parts, want 3)"},
		{"bad base64", "a.!!!.c", TokenClaims{}, "the token's payload is not base64url"},
		{"not JSON", "a." + base64.RawURLEncoding.EncodeToString([]byte("secret-claims")) + ".c", TokenClaims{}, "the token's payload is not a JSON object of claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokenClaims(tt.jwt)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseTokenClaims error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{Cause: "no client id"}, "error: no client id"},
		{Problem{Vault: testVault, Secret: "a, b", Cause: "c.", Fix: "f."}, "error: vault homelab-kv.vault.azure.net, secrets a, b: c. Fix: f"},
		{Problem{Vault: testVault, Secret: "a#x", Files: []string{"f1", "f2"}, Cause: "line1\r\nline2\tx"}, "error: vault homelab-kv.vault.azure.net, secret a#x, files f1, f2: line1 line2 x"},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.p.String()); diff != "" {
			t.Errorf("String (-want +got):\n%s", diff)
		}
	}
}
