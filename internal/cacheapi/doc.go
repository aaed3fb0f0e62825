// Package cacheapi is the wire protocol between the agent and the kvinject
// cache: one POST of JSON over HTTPS, the pod's projected service-account
// token as its bearer token.
//
// The agent imports it, so it imports no Kubernetes package. No type here
// carries a token, and only Result.Value carries a secret value: whoever
// logs a Request, a Result's other fields or an Error logs no secret.
package cacheapi
