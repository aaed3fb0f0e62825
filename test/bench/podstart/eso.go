package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// What External Secrets Operator's azurekv provider sends over the link, as
// read from its source (providers/v1/azure/keyvault/keyvault.go and
// keyvault_new_sdk.go, external-secrets/external-secrets):
//
//   - Every reconcile builds a new provider client (secretstore.NewManager
//     per reconcile, closed at its end): nothing is cached between
//     refreshes, not the access token, not the connections (refreshes are
//     hours apart, far beyond any idle-connection timeout).
//   - Default (spec.provider.azurekv.useAzureSDK unset, as in the reference
//     ClusterSecretStore): the legacy go-autorest client. NewClient gets a
//     ServiceAccount token from the API server (TokenRequest: in-cluster,
//     not on the egress link), creates a new MSAL confidential client and
//     calls AcquireTokenByCredential for https://vault.azure.net/.default;
//     autorest's BearerAuthorizer then sends that token on the first Key
//     Vault request (no 401 challenge), api-version 7.0, one GET per
//     spec.data entry (entries naming the same Key Vault secret are not
//     merged). The ClusterSecretStore controller also calls NewClient each
//     time it revalidates the store (--store-requeue-interval, default
//     5 minutes), which in this mode is a full token exchange.
//   - useAzureSDK: true: azidentity.ClientAssertionCredential (the token is
//     acquired lazily) and a new azsecrets.Client per reconcile, so the first
//     GET takes the 401 challenge; store revalidation acquires no token.
//
// Here the MSAL and azsecrets code is the unmodified library; only the Key
// Vault GET of the legacy path is a plain net/http request with the bearer
// token, because go-autorest is not a dependency of this module. The legacy
// path is benchkit.ESOLegacyReconcile, shared with the cache benchmark.
type esoOp struct {
	name   string
	refs   []string // one Key Vault GET per entry, in order
	newSDK bool
	// handshake: only open one TLS connection to Entra ID (through the
	// proxy, as the clients do) and close it: the fixed cost of a connection.
	handshake bool
}

var esoOps = []esoOp{
	{name: "es-pgsql-creds", refs: []string{pgsqlName, pgsqlName}},
	{name: "es-mirror-registry-creds", refs: []string{registryName}},
	{name: "store revalidation", refs: nil},
	{name: "es-pgsql-creds, useAzureSDK", refs: []string{pgsqlName, pgsqlName}, newSDK: true},
	{name: "TLS handshake", handshake: true},
}

func (b *bench) handshakeOnly(ctx context.Context) error {
	pu, err := url.Parse(b.Emulator.ProxyURL())
	if err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", pu.Host)
	if err != nil {
		return err
	}
	defer c.Close()
	host := "login.microsoftonline.com"
	if _, err := fmt.Fprintf(c, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CONNECT: %s", resp.Status)
	}
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: b.Emulator.CertPool(), NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	return tc.Close()
}

// runESO performs one reconcile of op on the unlimited link and returns the
// emulator's counters for it.
func (b *bench) runESO(op esoOp) (sample, error) {
	tok, err := benchkit.ESOToken(b.Issuer, b.tmp)
	if err != nil {
		return sample{}, err
	}
	ctx, cancel := b.timeoutCtx()
	defer cancel()
	tr := b.Emulator.ProxyTransport() // fresh: no connection survives between refreshes
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	b.Emulator.ResetStats()
	if op.handshake {
		err = b.handshakeOnly(ctx)
	} else if op.newSDK {
		err = esoNewSDK(ctx, hc, tok, op.refs)
	} else {
		err = benchkit.ESOLegacyReconcile(ctx, hc, tok, op.refs)
	}
	if err != nil {
		return sample{}, err
	}
	tr.CloseIdleConnections()
	return b.collect(), nil
}

func esoNewSDK(ctx context.Context, hc *http.Client, tok string, refs []string) error {
	co := azcore.ClientOptions{Transport: hc}
	cred, err := azidentity.NewClientAssertionCredential(benchkit.TenantID, benchkit.ClientID, func(context.Context) (string, error) { return tok, nil },
		&azidentity.ClientAssertionCredentialOptions{ClientOptions: co})
	if err != nil {
		return err
	}
	client, err := azsecrets.NewClient(benchkit.VaultURL, cred, &azsecrets.ClientOptions{ClientOptions: co})
	if err != nil {
		return err
	}
	for _, name := range refs {
		if _, err := client.GetSecret(ctx, name, "", nil); err != nil {
			return err
		}
	}
	return nil
}

var _ policy.Transporter = (*http.Client)(nil)
