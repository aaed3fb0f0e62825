package azemu_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
)

type kvBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

type kvFailure struct {
	Status    int
	ErrorCode string
	Inner     string
}

func responseFailure(t *testing.T, err error) (kvFailure, kvBody) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not an azcore.ResponseError", err, err)
	}
	payload, perr := runtime.Payload(re.RawResponse)
	if perr != nil {
		t.Fatal(perr)
	}
	var b kvBody
	if err := json.Unmarshal(payload, &b); err != nil {
		t.Fatalf("body %q: %v", payload, err)
	}
	got := kvFailure{Status: re.StatusCode, ErrorCode: re.ErrorCode}
	if b.Error.InnerError != nil {
		got.Inner = b.Error.InnerError.Code
	}
	return got, b
}

func TestSecretErrors(t *testing.T) {
	cases := []struct {
		name          string
		client        string
		secret, ver   string
		want          kvFailure
		msgHas        string
		msgHasNot     string
		wantTokenReqs int64
	}{
		{
			name: "no role assignment", client: noRoleID, secret: pgSecret,
			want:   kvFailure{Status: 403, ErrorCode: "Forbidden", Inner: "ForbiddenByRbac"},
			msgHas: "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
		},
		{
			name: "not found", client: clientID, secret: "missing",
			want:   kvFailure{Status: 404, ErrorCode: "SecretNotFound"},
			msgHas: "A secret with (name/id) missing was not found in this key vault.",
		},
		{
			name: "version not found", client: clientID, secret: pgSecret, ver: "ffffffffffffffffffffffffffffffff",
			want:   kvFailure{Status: 404, ErrorCode: "SecretNotFound"},
			msgHas: "(name/id) app-pgsql/ffffffffffffffffffffffffffffffff was not found",
		},
		{
			name: "disabled", client: clientID, secret: "disabled-secret",
			want:   kvFailure{Status: 403, ErrorCode: "Forbidden", Inner: "SecretDisabled"},
			msgHas: "Operation get is not allowed on a disabled secret.",
		},
	}
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					cl := f.secrets(t, m, vaultName, f.credential(t, m, c.client, f.tokenF))
					before := f.emu.Stats().Classes[azemu.ClassKVGet].Requests
					_, err := cl.GetSecret(testCtx(t), c.secret, c.ver, nil)
					if err == nil {
						t.Fatal("GetSecret succeeded, want an error")
					}
					got, body := responseFailure(t, err)
					if diff := cmp.Diff(c.want, got); diff != "" {
						t.Errorf("failure (-want +got):\n%s", diff)
					}
					if !strings.Contains(body.Error.Message, c.msgHas) {
						t.Errorf("message %q does not contain %q", body.Error.Message, c.msgHas)
					}
					// 403 and 404 are final: the SDK must not retry them.
					if n := f.emu.Stats().Classes[azemu.ClassKVGet].Requests - before; n != 1 {
						t.Errorf("kv-get requests = %d, want 1 (no retry)", n)
					}
				})
			}
		})
	}
}

// rawVault sends one request to the vault with an optional bearer token.
func (f *fixture) rawVault(t *testing.T, m mode, path, token string) (*http.Response, []byte) {
	t.Helper()
	base, err := f.emu.VaultURL(vaultName)
	tr := f.emu.ProxyTransport()
	if m == directMode {
		base, err = f.emu.DirectVaultURL(vaultName)
		tr = f.emu.DirectTransport()
	}
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(path, "https://") {
		base = ""
	}
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func (f *fixture) accessToken(t *testing.T, m mode) string {
	t.Helper()
	tok, err := f.credential(t, m, clientID, f.tokenF).GetToken(testCtx(t), vaultScope)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func TestChallengeAndRawRoutes(t *testing.T) {
	const api = "?api-version=2026-04-01"
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t)
			resp, body := f.rawVault(t, m, "/secrets/app-pgsql/"+api, "")
			type challenge struct {
				Status        int
				Authenticate  string
				Body          string
				HTTP2         bool
				ContentTypeJS bool
			}
			got := challenge{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body), resp.ProtoMajor == 2, strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")}
			want := challenge{
				Status:        401,
				Authenticate:  `Bearer authorization="https://login.windows.net/` + tenantID + `", resource="https://vault.azure.net"`,
				Body:          `{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`,
				HTTP2:         true,
				ContentTypeJS: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("challenge (-want +got):\n%s", diff)
			}

			tok := f.accessToken(t, m)
			statuses := []struct {
				path string
				want int
			}{
				{"/secrets/app-pgsql" + api, 200},  // no trailing slash
				{"/secrets/app-pgsql/" + api, 200}, // SDK's form
				{"/secrets/APP-PGSQL/" + api, 200}, // names are case-insensitive
				{"/secrets/app-pgsql/", 400},       // api-version required
				{"/secrets" + api, 200},
				{"/secrets/app-pgsql/versions" + api, 200},
				{"/secrets" + api + "&maxresults=26", 400},
			}
			for _, s := range statuses {
				resp, body := f.rawVault(t, m, s.path, tok)
				if resp.StatusCode != s.want {
					t.Errorf("GET %s = %d %s, want %d", s.path, resp.StatusCode, body, s.want)
				}
			}
			// Bundle JSON as Key Vault writes it.
			_, body = f.rawVault(t, m, "/secrets/app-pgsql/0123456789abcdef0123456789abcdef"+api, tok)
			var bundle map[string]any
			if err := json.Unmarshal(body, &bundle); err != nil {
				t.Fatal(err)
			}
			attrs := bundle["attributes"].(map[string]any)
			for _, k := range []string{"created", "updated"} {
				if v, ok := attrs[k].(float64); !ok || v != float64(int64(v)) || v < 1e9 {
					t.Errorf("attributes.%s = %v, want integer Unix seconds", k, attrs[k])
				}
				delete(attrs, k)
			}
			id := bundle["id"].(string)
			delete(bundle, "id")
			if !strings.HasSuffix(id, "/secrets/app-pgsql/0123456789abcdef0123456789abcdef") {
				t.Errorf("id = %s", id)
			}
			wantBundle := map[string]any{
				"value":      "old-password",
				"attributes": map[string]any{"enabled": true, "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90.0},
			}
			if diff := cmp.Diff(wantBundle, bundle); diff != "" {
				t.Errorf("bundle (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListPaging(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t, func(o *azemu.Options) { o.PageSize = 10 })
			wantNames := []string{"app-pgsql", "disabled-secret"}
			for i := range 21 {
				name := fmt.Sprintf("bulk-%02d", i)
				if _, err := f.emu.SetSecret(vaultName, name, "v", ""); err != nil {
					t.Fatal(err)
				}
				wantNames = append(wantNames, name)
			}
			slices.Sort(wantNames)
			var wantVersions []string
			for i := range 12 {
				v, err := f.emu.SetSecret(vaultName, "many", fmt.Sprint(i), "")
				if err != nil {
					t.Fatal(err)
				}
				wantVersions = append(wantVersions, v)
			}
			wantNames = append(wantNames, "many")
			slices.Sort(wantNames)

			c := f.client(t, m)
			ctx := testCtx(t)
			var names []string
			pages := 0
			for pager := c.NewListSecretPropertiesPager(nil); pager.More(); {
				p, err := pager.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, s := range p.Value {
					names = append(names, s.ID.Name())
				}
			}
			if diff := cmp.Diff(wantNames, names); diff != "" {
				t.Errorf("listed names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(3, pages); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}

			var versions []string
			pages = 0
			for pager := c.NewListSecretPropertiesVersionsPager("many", nil); pager.More(); {
				p, err := pager.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, s := range p.Value {
					versions = append(versions, s.ID.Version())
				}
			}
			if diff := cmp.Diff(wantVersions, versions); diff != "" {
				t.Errorf("versions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(2, pages); diff != "" {
				t.Errorf("version pages (-want +got):\n%s", diff)
			}

			// maxresults is honoured and carried in nextLink.
			tok := f.accessToken(t, m)
			link := "/secrets?api-version=2026-04-01&maxresults=20"
			var sizes []int
			for link != "" && len(sizes) < 10 {
				resp, body := f.rawVault(t, m, link, tok)
				if resp.StatusCode != 200 {
					t.Fatalf("GET %s: %d %s", link, resp.StatusCode, body)
				}
				var page struct {
					Value    []json.RawMessage `json:"value"`
					NextLink *string           `json:"nextLink"`
				}
				if err := json.Unmarshal(body, &page); err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(page.Value))
				link = ""
				if page.NextLink != nil {
					link = *page.NextLink
					if !strings.Contains(link, "maxresults=20") || !strings.Contains(link, "api-version=") {
						t.Errorf("nextLink %s lacks maxresults or api-version", link)
					}
				}
			}
			if diff := cmp.Diff([]int{20, 4}, sizes); diff != "" {
				t.Errorf("page sizes with maxresults=20 (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListNeedsReadMetadata(t *testing.T) {
	f := newFixture(t)
	c := f.secrets(t, proxyMode, vaultName, f.credential(t, proxyMode, noRoleID, f.tokenF))
	_, err := c.NewListSecretPropertiesPager(nil).NextPage(testCtx(t))
	got, body := responseFailure(t, err)
	if diff := cmp.Diff(kvFailure{Status: 403, ErrorCode: "Forbidden", Inner: "ForbiddenByRbac"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !strings.Contains(body.Error.Message, "secrets/readMetadata/action") {
		t.Errorf("message %q lacks the readMetadata action", body.Error.Message)
	}
	// Granting the role at run time takes effect on the next request.
	if err := f.emu.AssignRole(vaultName, noRoleID, azemu.RoleReader); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewListSecretPropertiesPager(nil).NextPage(testCtx(t)); err != nil {
		t.Errorf("list as Key Vault Reader: %v", err)
	}
	// A reader still cannot read values.
	_, err = c.GetSecret(testCtx(t), pgSecret, "", nil)
	if got, _ := responseFailure(t, err); got.Inner != "ForbiddenByRbac" {
		t.Errorf("get as reader: %+v, want ForbiddenByRbac", got)
	}
}

func TestSetSecretRuntime(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, proxyMode)
	ctx := testCtx(t)
	ver, err := f.emu.SetSecret(vaultName, pgSecret, "rotated", "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetSecret(ctx, pgSecret, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	type got struct{ Value, Version, ContentType string }
	if diff := cmp.Diff(got{"rotated", ver, "text/plain"}, got{*resp.Value, resp.ID.Version(), *resp.ContentType}); diff != "" {
		t.Errorf("after SetSecret (-want +got):\n%s", diff)
	}
	if _, err := f.emu.SetSecret("nope", "x", "y", ""); !errors.Is(err, azemu.ErrUnknownVault) {
		t.Errorf("SetSecret(unknown vault) = %v, want ErrUnknownVault", err)
	}
	if err := f.emu.SetSecretEnabled(vaultName, pgSecret, "", false); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSecret(ctx, pgSecret, "", nil)
	if got, _ := responseFailure(t, err); got.Inner != "SecretDisabled" {
		t.Errorf("after disabling: %+v", got)
	}
	// A deleted secret is not found, by name or by version.
	if err := f.emu.DeleteSecret(vaultName, pgSecret); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", ver} {
		_, err = c.GetSecret(ctx, pgSecret, v, nil)
		if got, _ := responseFailure(t, err); got.Status != 404 || got.ErrorCode != "SecretNotFound" {
			t.Errorf("after deleting, version %q: %+v", v, got)
		}
	}
	if err := f.emu.DeleteSecret(vaultName, pgSecret); !errors.Is(err, azemu.ErrUnknownSecret) {
		t.Errorf("deleting twice = %v, want ErrUnknownSecret", err)
	}
}

// TestCertificateSecret: the secret behind a certificate object reads as
// Key Vault sends it, managed with its key's kid, through the SDK.
func TestCertificateSecret(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, proxyMode)
	ver, err := f.emu.AddSecretVersion(vaultName, "web-cert", azemu.SecretVersion{Value: "MIIK...", ContentType: "application/x-pkcs12", Certificate: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetSecret(testCtx(t), "web-cert", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Value, ContentType, Kid string
		Managed                 bool
	}
	want := got{"MIIK...", "application/x-pkcs12", "https://" + vaultName + ".vault.azure.net/keys/web-cert/" + ver, true}
	if diff := cmp.Diff(want, got{*resp.Value, *resp.ContentType, string(*resp.KID), *resp.Managed}); diff != "" {
		t.Errorf("certificate secret (-want +got):\n%s", diff)
	}
	if _, err := f.emu.AddSecretVersion(vaultName, "bad-cert", azemu.SecretVersion{Value: "x", ContentType: "text/plain", Certificate: true}); !errors.Is(err, azemu.ErrInvalidConfig) {
		t.Errorf("a certificate secret of content type text/plain = %v, want ErrInvalidConfig", err)
	}
}

// TestSovereignClouds runs the proxy flow against China and US Government
// host names: login host, vault suffix and token audience all change.
func TestSovereignClouds(t *testing.T) {
	cases := []struct {
		cloudName string
		sdkCloud  cloud.Configuration
		vault     string
		suffix    string
	}{
		{azemu.CloudChina, cloud.AzureChina, "cn-kv", ".vault.azure.cn"},
		{azemu.CloudUSGovernment, cloud.AzureGovernment, "gov-kv", ".vault.usgovcloudapi.net"},
	}
	f := newFixture(t, func(o *azemu.Options) {
		for _, c := range cases {
			o.Config.Vaults = append(o.Config.Vaults, azemu.Vault{
				Name: c.vault, Tenant: tenantID, Cloud: c.cloudName,
				RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
				Secrets:         []azemu.Secret{{Name: "s", Versions: []azemu.SecretVersion{{Value: c.cloudName}}}},
			})
		}
	})
	for _, c := range cases {
		t.Run(c.cloudName, func(t *testing.T) {
			co := f.clientOptions(proxyMode)
			co.Cloud = c.sdkCloud
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				ClientOptions: co, ClientID: clientID, TenantID: tenantID, TokenFilePath: f.tokenF,
			})
			if err != nil {
				t.Fatal(err)
			}
			u, err := f.emu.VaultURL(c.vault)
			if err != nil {
				t.Fatal(err)
			}
			if want := "https://" + c.vault + c.suffix; u != want {
				t.Errorf("VaultURL = %s, want %s", u, want)
			}
			cl, err := azsecrets.NewClient(u, cred, &azsecrets.ClientOptions{ClientOptions: co})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := cl.GetSecret(testCtx(t), "s", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.cloudName, *resp.Value); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// A public-cloud token is refused by a China vault (wrong audience).
	tok := f.accessToken(t, proxyMode)
	hc := &http.Client{Transport: f.emu.ProxyTransport(), Timeout: 10 * time.Second}
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, "https://cn-kv.vault.azure.cn/secrets/s/?api-version=2026-04-01", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource="https://vault.azure.cn"`) {
		t.Errorf("public token at China vault: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}
