package azemu_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// TestEnvironmentOnlyWiring runs the SDK with nil options in a child
// process configured only through the environment, as the agent will be:
// HTTPS_PROXY, SSL_CERT_FILE and the workload identity variables. A child
// process is needed because net/http and crypto/x509 read those variables
// once per process.
func TestEnvironmentOnlyWiring(t *testing.T) {
	if os.Getenv("AZEMU_CHILD") == "1" {
		return
	}
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestEnvChild$", "-test.v")
	cmd.Env = append(os.Environ(),
		"AZEMU_CHILD=1",
		"HTTPS_PROXY="+f.emu.ProxyURL(), "https_proxy="+f.emu.ProxyURL(),
		"NO_PROXY=", "no_proxy=",
		"SSL_CERT_FILE="+f.emu.CAFile(), "SSL_CERT_DIR=/nonexistent",
		"AZURE_CLIENT_ID="+clientID, "AZURE_TENANT_ID="+tenantID,
		"AZURE_FEDERATED_TOKEN_FILE="+f.tokenF,
		"AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CHILD-OK") {
		t.Fatalf("child did not fetch the secret:\n%s", out)
	}
	if n := f.emu.Stats().ProxyConnects; n < 2 {
		t.Errorf("ProxyConnects = %d, want >= 2 (login and vault)", n)
	}
}

// TestEnvChild is the child half of TestEnvironmentOnlyWiring.
func TestEnvChild(t *testing.T) {
	if os.Getenv("AZEMU_CHILD") != "1" {
		t.Skip("child process only")
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient("https://"+vaultName+".vault.azure.net", cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := c.GetSecret(ctx, pgSecret, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *resp.Value != pgValue {
		t.Fatal("wrong value")
	}
	// Print a marker, never the value.
	fmt.Println("CHILD-OK")
}
