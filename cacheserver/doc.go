// Package cacheserver is the kvinject cache: an HTTPS handler that reads
// Key Vault secrets for pods and keeps them in memory, so that a rollout
// costs one read per secret rather than one per pod, and pods can start
// while Entra ID or Key Vault cannot be reached.
//
// It acts for a pod only with that pod's live token: every request's bearer
// token passes a TokenReview (audience api://AzureADTokenExchange, a
// ServiceAccount's, bound to a pod that still exists), the cache signs in to
// Entra ID with that same token as the identity the request names, and every
// value is keyed by tenant, client id and token subject, so a value goes
// only to callers whose own token could read it.
//
// An outage is served from cache, a revocation is not: after a network
// error, a 5xx or a 429 the last value is served, marked stale, up to
// Options.MaxStale past its time to live; after a 401, 403, 404 or any
// AADSTS refusal nothing is served and the entry is forgotten.
//
// Values live in memory only. No log line, metric or error carries a value,
// a token or an assertion.
package cacheserver
