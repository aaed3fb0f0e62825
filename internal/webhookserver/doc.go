// Package webhookserver runs `kvinject webhook`: controller-runtime's
// webhook server (TLS, certificate reload, graceful shutdown) with a manager
// that caches ServiceAccounts' metadata, and the pod admission handler.
//
// The handler decodes the AdmissionReview and the pod once, looks up the
// pod's ServiceAccount, and answers with webhook.Admit: the JSON patch
// operations (additions only, so a field the pod carries that this build
// does not know survives admission) and the response's warnings, from one
// reading of the annotations. It never logs, counts or returns a secret value: denials name
// annotations and positions, not contents.
//
// The mutation's options are read once per request from an atomic pointer:
// when --cache-ca-file changes (the cache's certificate rotated), Serve
// swaps in a validated copy that trusts the new bundle, and keeps the last
// good one while the file is not valid.
package webhookserver
