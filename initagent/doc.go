// Package initagent is the kvinject init-container agent: it reads the
// injection spec (KVINJECT_SPEC) and the AZURE_* workload identity variables,
// exchanges the pod's projected service-account token for an Entra ID access
// token, fetches every referenced Key Vault secret once, extracts JSON
// properties, renders templates and writes all files or none onto the pod's
// memory-backed emptyDir.
//
// The package never imports Kubernetes packages and never lets a secret value
// or a token reach a log line, an error or the exit output: diagnostics are
// built from structured fields (HTTP status, error codes, JSON keys, token
// claims), not from error strings that might quote a response body.
//
// Speed: the agent skips Entra instance discovery for the known public
// clouds, authorizes its first Key Vault request with a token for the known
// scope instead of eliciting the 401 challenge, opens the TLS connection to
// each vault while the token exchange runs, and fetches in parallel over one
// HTTP/2 connection per host.
package initagent
