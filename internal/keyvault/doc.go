// Package keyvault is kvinject's Key Vault read path, shared by the agent,
// the cluster cache and the kubelet credential provider: the workload
// identity's credential, the HTTPS transport (HTTPS_PROXY, NO_PROXY and
// SSL_CERT_FILE honoured, HTTP/2), retries, the client of the cluster
// cache, and the diagnostics that explain a failed read as one line with
// its fix.
//
// Clients serve the agent, which signs in with the projected token's file;
// a Reader serves a program that holds a service-account token itself.
// Problem, Diagnoser and TokenClaims explain failures from structured fields
// (HTTP status, error codes, token claims), never from error strings that
// might quote a response body: a secret value or a token never reaches a
// Problem. The package imports no Kubernetes package.
//
// Speed: the clients skip Entra instance discovery for the known public
// clouds, authorize the first Key Vault request with a token for the known
// scope instead of eliciting the 401 challenge, open the TLS connection to
// each vault while the token exchange runs (Clients.Warm), and read in
// parallel over one HTTP/2 connection per host.
package keyvault
