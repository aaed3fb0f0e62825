package azemu_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

const (
	tenantID   = "11111111-2222-3333-4444-555555555555"
	clientID   = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	noRoleID   = "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
	unknownID  = "cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee"
	vaultName  = "homelab-kv"
	otherVault = "other-kv"
	namespace  = "apps"
	saName     = "web"
	pgValue    = `{"username":"superman","password":"louiselane"}`
	pgSecret   = "app-pgsql"
)

type fixture struct {
	emu    *azemu.Emulator
	iss    *oidctest.Issuer
	logs   *syncbuf.Buffer
	dir    string
	tokenF string // token file for namespace/saName
}

type fixtureOpt func(*azemu.Options)

func baseConfig(issuer string) azemu.Config {
	disabled := false
	return azemu.Config{
		Tenants: []azemu.Tenant{{ID: tenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{
			{
				ClientID: clientID, Tenant: tenantID, DisplayName: "kvinject-app",
				FederatedCredentials: []azemu.FederatedCredential{
					{Name: "apps-web", Issuer: issuer, Subject: "system:serviceaccount:" + namespace + ":" + saName},
				},
			},
			{
				ClientID: noRoleID, Tenant: tenantID, DisplayName: "no-role",
				FederatedCredentials: []azemu.FederatedCredential{
					{Name: "apps-web", Issuer: issuer, Subject: "system:serviceaccount:" + namespace + ":" + saName},
				},
			},
		},
		Vaults: []azemu.Vault{
			{
				Name: vaultName, Tenant: tenantID,
				RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
				Secrets: []azemu.Secret{
					{Name: pgSecret, Versions: []azemu.SecretVersion{
						{Version: "0123456789abcdef0123456789abcdef", Value: "old-password"},
						{Value: pgValue, ContentType: "application/json", Tags: map[string]string{"app": "pg"}},
					}},
					{Name: "disabled-secret", Versions: []azemu.SecretVersion{{Value: "nope", Enabled: &disabled}}},
				},
			},
			{Name: otherVault, Tenant: tenantID},
		},
	}
}

func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	iss, err := oidctest.New(oidctest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	logs := &syncbuf.Buffer{}
	o := azemu.Options{
		Config:      baseConfig(iss.URL()),
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		IssuerCAPEM: iss.CAPEM(),
		Seed:        42,
	}
	for _, f := range opts {
		f(&o)
	}
	emu, err := azemu.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	dir := t.TempDir()
	f := &fixture{emu: emu, iss: iss, logs: logs, dir: dir, tokenF: filepath.Join(dir, "token")}
	if _, err := iss.WriteToken(f.tokenF, oidctest.Claims{Namespace: namespace, ServiceAccount: saName}); err != nil {
		t.Fatal(err)
	}
	return f
}

type mode string

const (
	proxyMode  mode = "proxy"
	directMode mode = "direct"
)

var modes = []mode{proxyMode, directMode}

// fastRetry keeps the SDK's retries quick. MaxRetryDelay stays above the
// 1 s Retry-After tests use: azcore does not retry at all when Retry-After
// exceeds it.
var fastRetry = policy.RetryOptions{MaxRetries: 3, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 2 * time.Second}

func (f *fixture) clientOptions(m mode) azcore.ClientOptions {
	var tr *http.Transport
	co := azcore.ClientOptions{Retry: fastRetry, Cloud: cloud.AzurePublic}
	if m == proxyMode {
		tr = f.emu.ProxyTransport()
	} else {
		tr = f.emu.DirectTransport()
		co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: f.emu.DirectURL() + "/"}
	}
	co.Transport = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return co
}

func (f *fixture) credential(t *testing.T, m mode, client, tokenFile string) *azidentity.WorkloadIdentityCredential {
	t.Helper()
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions:            f.clientOptions(m),
		ClientID:                 client,
		TenantID:                 tenantID,
		TokenFilePath:            tokenFile,
		DisableInstanceDiscovery: m == directMode,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func (f *fixture) secrets(t *testing.T, m mode, vault string, cred azcore.TokenCredential) *azsecrets.Client {
	t.Helper()
	var u string
	var err error
	if m == proxyMode {
		u, err = f.emu.VaultURL(vault)
	} else {
		u, err = f.emu.DirectVaultURL(vault)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient(u, cred, &azsecrets.ClientOptions{
		ClientOptions:                        f.clientOptions(m),
		DisableChallengeResourceVerification: m == directMode,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client is the common case: the configured identity with the default token.
func (f *fixture) client(t *testing.T, m mode) *azsecrets.Client {
	return f.secrets(t, m, vaultName, f.credential(t, m, clientID, f.tokenF))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
