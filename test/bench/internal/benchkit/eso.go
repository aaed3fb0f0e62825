package benchkit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

// ESOToken is ESO's ServiceAccount token (what TokenRequest gives ESO),
// written into dir on the first call and read back on later ones.
func ESOToken(iss *oidctest.Issuer, dir string) (string, error) {
	p := filepath.Join(dir, "eso-token")
	if _, err := os.Stat(p); err != nil {
		if _, err := iss.WriteToken(p, oidctest.Claims{Namespace: esoNamespace, ServiceAccount: esoServiceAccount, Lifetime: 0}); err != nil {
			return "", err
		}
	}
	raw, err := os.ReadFile(p)
	return string(raw), err
}

// ESOLegacyReconcile replays what External Secrets Operator's azurekv
// provider sends per reconcile in its default mode (useAzureSDK unset, the
// legacy go-autorest client; test/bench/podstart/eso.go says where in ESO's
// source): a new MSAL confidential client exchanges token, ESO's
// ServiceAccount token, for a Key Vault access token (instance discovery,
// the tenant's OpenID configuration, the token request), then one bearer
// GET per entry of refs, in order, with api-version 7.0 and no 401
// challenge. Nothing is kept between calls, as nothing is kept between
// ESO's reconciles; no refs is a ClusterSecretStore revalidation, the token
// exchange alone. hc carries it all (through the emulator's proxy).
//
// The MSAL code is the unmodified library; the GET is a plain net/http
// request with go-autorest's headers, go-autorest not being a dependency of
// this module.
func ESOLegacyReconcile(ctx context.Context, hc *http.Client, token string, refs []string) error {
	cred := confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
		return token, nil
	})
	cc, err := confidential.New(Authority+TenantID, ClientID, cred, confidential.WithHTTPClient(hc))
	if err != nil {
		return err
	}
	res, err := cc.AcquireTokenByCredential(ctx, []string{"https://vault.azure.net/.default"})
	if err != nil {
		return err
	}
	for _, name := range refs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, VaultURL+"/secrets/"+name+"/?api-version=7.0", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+res.AccessToken)
		req.Header.Set("User-Agent", "Go/go1.24 (amd64-linux) go-autorest/v14.2.1 keyvault/7.0")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", name, resp.Status)
		}
	}
	return nil
}
