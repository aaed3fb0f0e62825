package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"

	"github.com/kvinject/kvinject/internal/oidctest"
)

// What External Secrets Operator's azurekv provider sends over the link per
// reconcile, in its default mode (useAzureSDK unset, as in the reference
// ClusterSecretStore), as test/bench/podstart/eso.go replays it (read its
// comment for the source): a new MSAL confidential client exchanges ESO's
// ServiceAccount token for a Key Vault access token (instance discovery,
// the tenant's OpenID configuration, the token request), then one bearer
// GET per spec.data entry, nothing kept between reconciles. A store
// revalidation (every --store-requeue-interval) is the token exchange
// alone. The MSAL code is the unmodified library; the GET is a plain
// net/http request with go-autorest's headers.
type esoOp string

const (
	// esoRefreshOp is the refresh of an ExternalSecret with one data
	// entry for each of the pods' secrets.
	esoRefreshOp esoOp = "refresh"
	// esoRevalidateOp is a ClusterSecretStore revalidation.
	esoRevalidateOp esoOp = "store revalidation"
)

// runESO performs one reconcile on the unlimited link (bytes do not depend
// on the link) and returns the emulator's counters for it.
func (b *bench) runESO(op esoOp) (upstream, error) {
	tok, err := b.esoToken()
	if err != nil {
		return upstream{}, err
	}
	var refs []string
	if op == esoRefreshOp {
		for i := range b.c.secrets {
			refs = append(refs, podSecret(i))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.c.podTimeout)
	defer cancel()
	tr := b.emu.ProxyTransport() // fresh: no connection survives between refreshes
	defer tr.CloseIdleConnections()
	b.emu.ResetStats()
	if err := esoLegacy(ctx, &http.Client{Transport: tr}, tok, refs); err != nil {
		return upstream{}, err
	}
	tr.CloseIdleConnections()
	return b.collect(), nil
}

// esoToken is the token of ESO's ServiceAccount (what TokenRequest returns).
func (b *bench) esoToken() (string, error) {
	p := filepath.Join(b.tmp, "eso-token")
	if _, err := os.Stat(p); err != nil {
		if _, err := b.iss.WriteToken(p, oidctest.Claims{Namespace: "external-secrets", ServiceAccount: "eso-az-sa", Lifetime: 0}); err != nil {
			return "", err
		}
	}
	raw, err := os.ReadFile(p)
	return string(raw), err
}

func esoLegacy(ctx context.Context, hc *http.Client, tok string, refs []string) error {
	cred := confidential.NewCredFromAssertionCallback(func(context.Context, confidential.AssertionRequestOptions) (string, error) {
		return tok, nil
	})
	cc, err := confidential.New(authority+tenantID, clientID, cred, confidential.WithHTTPClient(hc))
	if err != nil {
		return err
	}
	res, err := cc.AcquireTokenByCredential(ctx, []string{"https://vault.azure.net/.default"})
	if err != nil {
		return err
	}
	for _, name := range refs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, vaultURL+"/secrets/"+name+"/?api-version=7.0", nil)
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
