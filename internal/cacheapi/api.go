package cacheapi

// Path is where the cache serves secrets: POST, Content-Type
// application/json, Authorization: Bearer <the pod's projected token for
// the audience api://AzureADTokenExchange>.
const Path = "/v1/secrets"

// Limits of one request. The cache refuses a larger body with 413, more
// secrets with 400, and answers a larger value with a Result.Error.
const (
	// MaxRequestBytes bounds a request body: 50 references of the longest
	// vault URL, name and version take under 16 KiB.
	MaxRequestBytes = 64 << 10
	// MaxSecretsPerRequest bounds the references of one request; the agent
	// splits a longer list.
	MaxSecretsPerRequest = 50
	// MaxValueBytes bounds one secret value: Key Vault's own limit is
	// 25 KiB, so a larger answer is not Key Vault's.
	MaxValueBytes = 32 << 10
	// MaxResponseBytes bounds one answer: a result that would take it past
	// this is answered with CodeAnswerTooLarge instead of its value, which
	// the agent then reads from Key Vault directly. 50 values at Key Vault's
	// limit take 1.3 MB.
	MaxResponseBytes = 2 << 20
)

// Request asks for secrets as one workload identity. Each secret is named
// once: the cache refuses a request that repeats a reference. The cache signs in as
// ClientID in TenantID with the caller's own token, so a caller whose token
// Entra ID does not federate with ClientID gets nothing.
type Request struct {
	ClientID string      `json:"clientID"`
	TenantID string      `json:"tenantID"`
	Secrets  []SecretRef `json:"secrets"`
}

// SecretRef names one secret version.
type SecretRef struct {
	// Vault is the vault's URL: https://NAME.vault.azure.net (or the
	// cache's cloud's vault suffix), nothing after the host.
	Vault string `json:"vault"`
	Name  string `json:"name"`
	// Version is 32 hexadecimal digits, or empty for the latest.
	Version string `json:"version,omitempty"`
}

// Response holds one Result per requested secret, in request order.
type Response struct {
	Secrets []Result `json:"secrets"`
}

// Result is one secret's value, or why there is none.
type Result struct {
	Ref SecretRef `json:"ref"`
	// Value, Version (the version Key Vault resolved) and ContentType are
	// set when Error is nil.
	Value       string `json:"value,omitempty"`
	Version     string `json:"version,omitempty"`
	ContentType string `json:"contentType,omitempty"`
	// Created is when Key Vault created Version (its attributes.created),
	// in Unix seconds; 0 or absent when not known (an older cache). The
	// agent's refresh never replaces a version with one created earlier.
	Created int64 `json:"created,omitempty"`
	// Stale says the value outlived its time to live because Entra ID or
	// Key Vault could not be reached or failed (5xx, 429): it is the last
	// value read, AgeSeconds ago.
	Stale      bool   `json:"stale,omitempty"`
	AgeSeconds int64  `json:"ageSeconds"`
	Error      *Error `json:"error,omitempty"`
}

// Error is why a secret has no value.
type Error struct {
	// Status is the upstream HTTP status; 0 when no answer came (network)
	// or the cache refused the reference itself.
	Status int `json:"status"`
	// Code is Key Vault's error code ("SecretNotFound", "Forbidden"),
	// Entra ID's ("AADSTS700213"), or the cache's own ("InvalidReference",
	// "ValueTooLarge").
	Code string `json:"code,omitempty"`
	// Cause and Fix are the agent's diagnosis, as it would give it reading
	// Key Vault directly: what went wrong with this secret, and what to do.
	// Never a value or a token, nor what only the container log may show
	// (a secret's other key names, the vault's resource id).
	Cause string `json:"cause"`
	Fix   string `json:"fix,omitempty"`
}

// Codes the cache gives in Error.Code when the answer is its own.
const (
	CodeInvalidReference = "InvalidReference"
	CodeValueTooLarge    = "ValueTooLarge"
	// CodeAnswerTooLarge: the answer's other results already took
	// MaxResponseBytes (Status 0: read it directly).
	CodeAnswerTooLarge = "AnswerTooLarge"
)

// Refusal is the JSON body of a refused request (400, 401, 403, 405, 413,
// 415, 429, 503), which names no token or value.
type Refusal struct {
	// Reason is one word: "wrong-audience", "expired", "pod-gone",
	// "rate-limited", "review-busy" (docs/cache.md lists them all).
	Reason string `json:"reason"`
	// Error is the exact cause, one line.
	Error string `json:"error"`
}
