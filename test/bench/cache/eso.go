package main

import (
	"context"
	"net/http"

	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// What External Secrets Operator's azurekv provider sends over the link per
// reconcile, in its default mode (useAzureSDK unset, as in the reference
// ClusterSecretStore), replayed as podstart replays it
// (benchkit.ESOLegacyReconcile): a new MSAL confidential client exchanges
// ESO's ServiceAccount token for a Key Vault access token, then one bearer
// GET per spec.data entry, nothing kept between reconciles. A store
// revalidation (every --store-requeue-interval) is the token exchange
// alone.
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
	tok, err := benchkit.ESOToken(b.Issuer, b.tmp)
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
	tr := b.Emulator.ProxyTransport() // fresh: no connection survives between refreshes
	defer tr.CloseIdleConnections()
	b.Emulator.ResetStats()
	if err := benchkit.ESOLegacyReconcile(ctx, &http.Client{Transport: tr}, tok, refs); err != nil {
		return upstream{}, err
	}
	tr.CloseIdleConnections()
	return benchkit.ReadTraffic(b.Emulator), nil
}
