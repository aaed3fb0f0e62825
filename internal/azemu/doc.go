// Package azemu emulates the parts of Microsoft Entra ID and Azure Key
// Vault that kvinject's agent uses, well enough that the unmodified Azure
// SDK for Go (azidentity's WorkloadIdentityCredential and azsecrets)
// cannot tell it from Azure. It exists because tests and demos have no
// Azure: nothing here is a security boundary, and it listens on loopback
// only.
//
// Two ways in:
//
//   - Proxy mode, for production wiring: the emulator is an HTTPS_PROXY that
//     answers CONNECT for login.microsoftonline.com and NAME.vault.azure.net
//     (and the China and US Government equivalents), terminates TLS itself
//     with certificates from its own CA (CAFile, for SSL_CERT_FILE), and
//     refuses every other host. The SDK keeps its real URLs, including
//     instance discovery.
//   - Direct mode, for unit tests: the same handlers on
//     https://127.0.0.1:PORT (DirectURL, DirectVaultURL). The SDK then needs
//     DisableInstanceDiscovery and DisableChallengeResourceVerification.
//
// Entra ID: instance discovery, the tenant's OpenID configuration, and the
// token endpoint for client_credentials with a federated client assertion,
// validated like Entra (exact issuer, the issuer's discovery document and
// JWKS fetched over HTTPS, RS256 signature and kid, audience, subject, time)
// with Entra's AADSTS codes and error bodies. Key Vault: the 401 bearer
// challenge, RBAC by role assignment, and the secrets data plane (get,
// get version, list, list versions with paging, set). Configuration comes
// from Config (Go or YAML/JSON) and can change at run time; Knobs add
// latency, a bandwidth limit and faults (429, 503, TCP resets); Stats count
// requests and bytes per endpoint Class.
//
// The emulator never dials out, except to the OIDC issuers named in
// federated credentials (and the jwks_uri hosts they advertise), and its
// logs never contain secret values, client assertions or access tokens.
package azemu
