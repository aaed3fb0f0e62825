// Package oidctest runs a fake OpenID Connect issuer that behaves like a
// kube-apiserver's service-account issuer, for tests of workload identity
// federation without a cluster.
//
// It reproduces the quirks that matter to a relying party such as Entra ID
// (or the azemu emulator standing in for it):
//
//   - it serves HTTPS on 127.0.0.1 with a certificate from its own CA, so the
//     relying party must be told to trust that CA;
//   - /.well-known/openid-configuration names a jwks_uri whose host may differ
//     from the host the discovery document was fetched from (kube-apiserver
//     advertises its own address there), while still resolving to loopback;
//   - /openid/v1/jwks answers 406 Not Acceptable unless the Accept header
//     includes application/jwk-set+json, as kube-apiserver does;
//   - tokens are RS256 with a kid derived from the public key, and carry
//     iss, sub=system:serviceaccount:NS:SA, aud, iat, nbf and exp.
//
// Keys can be rotated while running, so tests can exercise JWKS caching.
package oidctest
