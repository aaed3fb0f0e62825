package benchkit

import (
	"fmt"
	"strings"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

// The emulated Azure side. Both benchmarks use the same ids and vault so
// that tokens, URLs and therefore bytes on the wire are the same size in
// both, and their rows can be set side by side.
const (
	TenantID  = "11111111-2222-3333-4444-555555555555"
	ClientID  = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	vaultName = "homelab-kv"
	VaultURL  = "https://homelab-kv.vault.azure.net"
	Authority = "https://login.microsoftonline.com/"

	// ESO's ServiceAccount in the reference setup, federated with the same
	// identity as the pods.
	esoNamespace      = "external-secrets"
	esoServiceAccount = "eso-az-sa"
)

// Azure is a run's emulated Azure side: the issuer that signs the
// ServiceAccount tokens (the cluster's, in a real cluster) and the Entra ID
// and Key Vault emulator that trusts it.
type Azure struct {
	Issuer   *oidctest.Issuer
	Emulator *azemu.Emulator
}

// StartAzure starts the issuer and the emulator with one tenant; the
// identity, federated with the pods' ServiceAccount podNamespace/podName
// and with ESO's; and the vault with secrets, readable by the identity.
// The emulator's seed is fixed, so that every run issues the same tokens.
func StartAzure(podNamespace, podName string, secrets []azemu.Secret) (*Azure, error) {
	iss, err := oidctest.New(oidctest.Options{})
	if err != nil {
		return nil, err
	}
	cfg := azemu.Config{
		Tenants: []azemu.Tenant{{ID: TenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{{ClientID: ClientID, Tenant: TenantID, FederatedCredentials: []azemu.FederatedCredential{
			{Name: podName, Issuer: iss.URL(), Subject: serviceAccountSubject(podNamespace, podName)},
			{Name: "eso", Issuer: iss.URL(), Subject: serviceAccountSubject(esoNamespace, esoServiceAccount)},
		}}},
		Vaults: []azemu.Vault{{
			Name: vaultName, Tenant: TenantID,
			RoleAssignments: []azemu.RoleAssignment{{ClientID: ClientID, Role: azemu.RoleSecretsUser}},
			Secrets:         secrets,
		}},
	}
	emu, err := azemu.Start(azemu.Options{Config: cfg, IssuerCAPEM: iss.CAPEM(), Seed: 1})
	if err != nil {
		iss.Close()
		return nil, err
	}
	return &Azure{Issuer: iss, Emulator: emu}, nil
}

// Close stops the emulator, then the issuer it fetches keys from.
func (a *Azure) Close() {
	a.Emulator.Close()
	a.Issuer.Close()
}

func serviceAccountSubject(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// SweepSecretName is the name of sweep secret i, the secrets a pod reads
// when a benchmark varies how many it reads.
func SweepSecretName(i int) string { return fmt.Sprintf("bench-secret-%02d", i) }

// sweepSecretValue is sweep secret i's value: 64 bytes of JSON, a typical
// password or API key, read by the agent as its property "v".
func sweepSecretValue(i int) string {
	body := fmt.Sprintf("%02d-%s", i, strings.Repeat("k7Qx", 14))[:56]
	return `{"v":"` + body + `"}`
}

// SweepSecret is sweep secret i as the emulator's vault holds it.
func SweepSecret(i int) azemu.Secret {
	return azemu.Secret{Name: SweepSecretName(i), Versions: []azemu.SecretVersion{{Value: sweepSecretValue(i), ContentType: "application/json"}}}
}
