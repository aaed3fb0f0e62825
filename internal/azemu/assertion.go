package azemu

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// jwtParts is a decoded compact JWS. Claims are kept raw to report them
// faithfully in error messages.
type jwtParts struct {
	header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	claims struct {
		Iss string   `json:"iss"`
		Sub string   `json:"sub"`
		Aud audience `json:"aud"`
		Exp *int64   `json:"exp"`
		Nbf *int64   `json:"nbf"`
		Iat *int64   `json:"iat"`
	}
	signed []byte // header.payload
	sig    []byte
}

// audience accepts the JWT "aud" as a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = []string{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("aud: %w", err)
	}
	*a = l
	return nil
}

var errMalformedJWT = errors.New("malformed JWT")

func parseJWT(tok string) (*jwtParts, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errMalformedJWT
	}
	var j jwtParts
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", errMalformedJWT, err)
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", errMalformedJWT, err)
	}
	if j.sig, err = base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", errMalformedJWT, err)
	}
	if err := json.Unmarshal(hb, &j.header); err != nil {
		return nil, fmt.Errorf("%w: header: %w", errMalformedJWT, err)
	}
	if err := json.Unmarshal(cb, &j.claims); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", errMalformedJWT, err)
	}
	j.signed = []byte(parts[0] + "." + parts[1])
	return &j, nil
}

// checkAssertion validates a federated client assertion for id. The checks
// and their AADSTS codes follow Entra ID: issuer match, issuer metadata,
// key id, signature, audience, subject, validity time.
func (e *Emulator) checkAssertion(ctx context.Context, id Identity, assertion string) *aadError {
	invalidClient := func(code int, desc string) *aadError {
		return &aadError{status: http.StatusUnauthorized, err: "invalid_client", code: code, desc: desc}
	}
	j, err := parseJWT(assertion)
	if err != nil {
		return &aadError{status: http.StatusBadRequest, err: "invalid_request", code: 50027, desc: "JWT token is invalid or malformed."}
	}
	iss := j.claims.Iss
	var byIssuer []FederatedCredential
	for _, fc := range id.FederatedCredentials {
		if fc.Issuer == iss { // exact: case and trailing slash matter
			byIssuer = append(byIssuer, fc)
		}
	}
	if len(byIssuer) == 0 {
		return invalidClient(700211, fmt.Sprintf("No matching federated identity record found for presented assertion issuer '%s'. Please note that the matching is done using a case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", iss))
	}
	if j.header.Alg != "RS256" {
		return invalidClient(5002738, fmt.Sprintf("Invalid JWT token. '%s' is not a supported signature algorithm. Supported signing algorithms are: 'RS256'", j.header.Alg))
	}
	keys, err := e.jwks.get(ctx, e, iss)
	if err != nil {
		e.log.Warn("issuer metadata fetch failed", "issuer", iss, "err", err)
		return &aadError{status: http.StatusBadRequest, err: "invalid_request", code: 50166, desc: fmt.Sprintf("Request to External OIDC endpoint failed. Issuer: '%s'.", iss)}
	}
	pub, ok := keys[j.header.Kid]
	if !ok {
		return invalidClient(7000272, fmt.Sprintf("The certificate with identifier %s used to sign the federated credential could not be found in the metadata of identity provider %s.", j.header.Kid, iss))
	}
	digest := sha256.Sum256(j.signed)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], j.sig); err != nil {
		return invalidClient(700027, "Client assertion failed signature validation.")
	}
	var byAud []FederatedCredential
	for _, fc := range byIssuer {
		for _, a := range fc.audiences() {
			if slices.Contains(j.claims.Aud, a) {
				byAud = append(byAud, fc)
				break
			}
		}
	}
	if len(byAud) == 0 {
		return invalidClient(700212, fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'. Please note that the matching is done using a case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", strings.Join(j.claims.Aud, ",")))
	}
	if !slices.ContainsFunc(byAud, func(fc FederatedCredential) bool { return fc.Subject == j.claims.Sub }) {
		return invalidClient(700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Please note that the matching is done using a case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", j.claims.Sub))
	}
	now := time.Now()
	skew := e.opts.ClockSkew
	var nbf, exp time.Time
	if j.claims.Nbf != nil {
		nbf = time.Unix(*j.claims.Nbf, 0)
	} else if j.claims.Iat != nil {
		nbf = time.Unix(*j.claims.Iat, 0)
	}
	if j.claims.Exp != nil {
		exp = time.Unix(*j.claims.Exp, 0)
	}
	if exp.IsZero() || now.After(exp.Add(skew)) || (!nbf.IsZero() && now.Add(skew).Before(nbf)) {
		const f = "2006-01-02T15:04:05.0000000Z"
		return invalidClient(700024, fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
			now.UTC().Format(f), nbf.UTC().Format(f), exp.UTC().Format(f)))
	}
	return nil
}

// jwksCache caches issuer signing keys for Options.JWKSCacheTTL, like
// Entra ID does, so a key rotation is not seen until the entry expires or
// FlushJWKSCache is called.
type jwksCache struct {
	mu      sync.Mutex
	entries map[string]*jwksEntry
	// jwksHosts are jwks_uri hosts learned from trusted issuers' metadata;
	// the outbound dialer allows them.
	jwksHosts sync.Map
}

type jwksEntry struct {
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

// FlushJWKSCache forgets cached issuer keys, forcing a refetch.
func (e *Emulator) FlushJWKSCache() {
	e.jwks.mu.Lock()
	e.jwks.entries = map[string]*jwksEntry{}
	e.jwks.mu.Unlock()
}

// get returns the issuer's keys. It holds the lock while fetching so
// concurrent token requests cause one fetch, not a stampede.
func (c *jwksCache) get(ctx context.Context, e *Emulator, iss string) (map[string]*rsa.PublicKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ent, ok := c.entries[iss]; ok && time.Since(ent.fetched) < e.opts.JWKSCacheTTL {
		return ent.keys, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	keys, err := e.fetchJWKS(ctx, iss)
	if err != nil {
		return nil, err
	}
	c.entries[iss] = &jwksEntry{keys: keys, fetched: time.Now()}
	return keys, nil
}

func (e *Emulator) fetchJWKS(ctx context.Context, iss string) (map[string]*rsa.PublicKey, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discURL := strings.TrimSuffix(iss, "/") + "/.well-known/openid-configuration"
	if err := e.fetchJSON(ctx, ClassIssuerDiscovery, discURL, "application/json", &disc); err != nil {
		return nil, err
	}
	ju, err := url.Parse(disc.JWKSURI)
	if err != nil || ju.Scheme != "https" || ju.Host == "" {
		return nil, fmt.Errorf("issuer %s: jwks_uri %q is not an https URL", iss, disc.JWKSURI)
	}
	e.jwks.jwksHosts.Store(hostPort(ju), true)
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	// kube-apiserver answers 406 unless the JWK set type is acceptable.
	if err := e.fetchJSON(ctx, ClassIssuerJWKS, disc.JWKSURI, "application/jwk-set+json, application/json", &set); err != nil {
		return nil, err
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		ex, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(ex) > 4 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(ex).Int64())}
	}
	return keys, nil
}

func (e *Emulator) fetchJSON(ctx context.Context, class Class, u, accept string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "azemu (Entra ID emulator)")
	resp, err := e.issuerClient.Do(req)
	if err != nil {
		e.stats.record(class, 0, 0, 0)
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	// For outbound fetches "in" is what the emulator received.
	e.stats.record(class, resp.StatusCode, int64(len(b)), 0)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: status %s", u, resp.Status)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	return nil
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// newIssuerClient builds the only client that ever leaves the emulator. It
// ignores proxy environment variables (it could otherwise loop into the
// emulator or leak), and its dialer refuses every host that is neither a
// configured issuer nor a jwks_uri host those issuers advertised.
func (e *Emulator) newIssuerClient() (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	tr := e.opts.Config.IssuerTrust
	if tr.CAFile != "" {
		b, err := os.ReadFile(tr.CAFile)
		if err != nil {
			return nil, fmt.Errorf("azemu: issuer CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%w: issuer CA file %s has no PEM certificates", ErrInvalidConfig, tr.CAFile)
		}
	}
	for what, p := range map[string]string{"issuerTrust.caPEM": tr.CAPEM, "IssuerCAPEM": string(e.opts.IssuerCAPEM)} {
		if p != "" && !pool.AppendCertsFromPEM([]byte(p)) {
			return nil, fmt.Errorf("%w: %s has no PEM certificates", ErrInvalidConfig, what)
		}
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	d := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		Proxy:           nil,
		TLSClientConfig: tlsCfg,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if !e.issuerHostAllowed(addr) {
				return nil, fmt.Errorf("azemu: refusing to dial %s: not a configured issuer host", addr)
			}
			if to, ok := e.opts.IssuerHosts[strings.ToLower(addr)]; ok {
				addr = to
			}
			return d.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}, nil
}

func (e *Emulator) issuerHostAllowed(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	key := net.JoinHostPort(strings.ToLower(host), port)
	if _, ok := e.jwks.jwksHosts.Load(key); ok {
		return true
	}
	e.state.mu.RLock()
	defer e.state.mu.RUnlock()
	for _, id := range e.state.identities {
		for _, fc := range id.FederatedCredentials {
			if u, err := url.Parse(fc.Issuer); err == nil && hostPort(u) == key {
				return true
			}
		}
	}
	return false
}
