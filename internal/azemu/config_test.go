package azemu_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
)

func TestLoadDemoConfig(t *testing.T) {
	got, err := azemu.LoadConfig("testdata/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := azemu.Config{
		Tenants: []azemu.Tenant{{ID: tenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{{
			ClientID: clientID, Tenant: tenantID, DisplayName: "kvinject-demo-app",
			FederatedCredentials: []azemu.FederatedCredential{{
				Name: "demo-app", Issuer: "https://kubernetes.default.svc.cluster.local",
				Subject: "system:serviceaccount:demo:app", Audiences: []string{"api://AzureADTokenExchange"},
			}},
		}},
		Vaults: []azemu.Vault{{
			Name: vaultName, Tenant: tenantID, Cloud: azemu.CloudPublic,
			RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
			Secrets: []azemu.Secret{{Name: pgSecret, Versions: []azemu.SecretVersion{{
				Value: pgValue, ContentType: "application/json", Tags: map[string]string{"app": "pgsql"},
			}}}},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("demo.yaml (-want +got):\n%s", diff)
	}
}

func TestParseConfigErrors(t *testing.T) {
	const head = "tenants: [{id: 11111111-2222-3333-4444-555555555555}]\n"
	cases := []struct {
		name, yaml string
	}{
		{"unknown field", head + "vault: []\n"},
		{"tenant not a GUID", "tenants: [{id: homelab}]\n"},
		{"identity in unknown tenant", head + "identities: [{clientID: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, tenant: 99999999-2222-3333-4444-555555555555}]\n"},
		{"http issuer", head + "identities: [{clientID: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, tenant: 11111111-2222-3333-4444-555555555555, federatedCredentials: [{name: x, issuer: 'http://insecure', subject: s}]}]\n"},
		{"unknown role", head + "vaults: [{name: kv1, tenant: 11111111-2222-3333-4444-555555555555, roleAssignments: [{clientID: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, role: Owner}]}]\n"},
		{"bad vault name", head + "vaults: [{name: 1kv, tenant: 11111111-2222-3333-4444-555555555555}]\n"},
		{"bad version", head + "vaults: [{name: kv1, tenant: 11111111-2222-3333-4444-555555555555, secrets: [{name: s, versions: [{version: v1, value: x}]}]}]\n"},
		{"unknown cloud", head + "vaults: [{name: kv1, tenant: 11111111-2222-3333-4444-555555555555, cloud: Mars}]\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := azemu.ParseConfig([]byte(c.yaml))
			if !errors.Is(err, azemu.ErrInvalidConfig) {
				t.Errorf("ParseConfig = %v, want ErrInvalidConfig", err)
			}
		})
	}
	// JSON is YAML too.
	if _, err := azemu.ParseConfig([]byte(`{"tenants":[{"id":"11111111-2222-3333-4444-555555555555"}]}`)); err != nil {
		t.Errorf("JSON config: %v", err)
	}
}

func TestStartRejectsNonLoopback(t *testing.T) {
	_, err := azemu.Start(azemu.Options{Config: azemu.Config{}, ProxyAddr: "0.0.0.0:0"})
	if !errors.Is(err, azemu.ErrInvalidConfig) {
		t.Errorf("Start on 0.0.0.0 = %v, want ErrInvalidConfig", err)
	}
	_, err = azemu.Start(azemu.Options{TokenLifetime: 60e9})
	if !errors.Is(err, azemu.ErrInvalidConfig) {
		t.Errorf("Start with 60s tokens = %v, want ErrInvalidConfig", err)
	}
}
