package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAudience is the audience Azure workload identity expects in a
// federated service-account token.
const DefaultAudience = "api://AzureADTokenExchange"

// JWKSMediaType is the media type kube-apiserver insists on in Accept.
const JWKSMediaType = "application/jwk-set+json"

// Options configures an Issuer. The zero value is usable.
type Options struct {
	// JWKSHost is the host name written into the discovery document's
	// jwks_uri (the port is the issuer's). kube-apiserver advertises its own
	// address there, which is often not the name the issuer URL uses; the
	// default "localhost" reproduces that while still resolving to loopback.
	// Set it to "127.0.0.1" to make both the same.
	JWKSHost string
	// RSABits is the RSA key size; default 2048.
	RSABits int
}

// Claims describes a service-account token to mint. Zero fields get the
// defaults a projected token for Azure workload identity would have.
type Claims struct {
	// Namespace and ServiceAccount form the subject
	// system:serviceaccount:NS:SA unless Subject is set.
	Namespace      string
	ServiceAccount string
	// Subject overrides the sub claim verbatim.
	Subject string
	// Audience defaults to [DefaultAudience].
	Audience []string
	// Issuer overrides iss (default: the issuer's URL).
	Issuer string
	// IssuedAt and NotBefore default to now; Expiry to IssuedAt+Lifetime
	// (Lifetime default one hour).
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
	Lifetime  time.Duration
	// KeyID overrides the kid header (the token is still signed with the
	// current key), e.g. to present a kid the JWKS does not list.
	KeyID string
	// PodName, PodUID, NodeName and NodeUID, when set, bind the token to a
	// pod and its node as the API server does for a projected token
	// (kubernetes.io.pod, kubernetes.io.node).
	PodName, PodUID, NodeName, NodeUID string
}

type signingKey struct {
	kid string
	key *rsa.PrivateKey
}

// Issuer is a running fake kube-apiserver OIDC issuer. Its methods are safe
// for concurrent use.
type Issuer struct {
	opts     Options
	url      string
	jwksURL  string
	caPEM    []byte
	caPool   *x509.CertPool
	srv      *http.Server
	ln       net.Listener
	mu       sync.Mutex
	keys     []signingKey // keys[0] signs; all are published
	jwksHits atomic.Int64
	discHits atomic.Int64
	rejected atomic.Int64
}

// New starts an issuer on 127.0.0.1 with a random port. Call Close when done.
func New(opts Options) (*Issuer, error) {
	if opts.JWKSHost == "" {
		opts.JWKSHost = "localhost"
	}
	if opts.RSABits == 0 {
		opts.RSABits = 2048
	}
	caCert, caKey, err := newCA()
	if err != nil {
		return nil, err
	}
	leaf, err := newLeaf(caCert, caKey, opts.JWKSHost)
	if err != nil {
		return nil, err
	}
	iss := &Issuer{opts: opts}
	iss.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	iss.caPool = x509.NewCertPool()
	iss.caPool.AddCert(caCert)
	if _, err := iss.Rotate(false); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("oidctest: listen: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	iss.url = "https://127.0.0.1:" + strconv.Itoa(port)
	iss.jwksURL = "https://" + net.JoinHostPort(opts.JWKSHost, strconv.Itoa(port)) + "/openid/v1/jwks"
	iss.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", iss.serveDiscovery)
	mux.HandleFunc("GET /openid/v1/jwks", iss.serveJWKS)
	iss.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = iss.srv.Serve(iss.ln) }()
	return iss, nil
}

// URL is the issuer identifier, https://127.0.0.1:PORT (no trailing slash),
// exactly what minted tokens carry in iss.
func (i *Issuer) URL() string { return i.url }

// JWKSURL is the jwks_uri advertised by the discovery document.
func (i *Issuer) JWKSURL() string { return i.jwksURL }

// CAPEM returns the PEM of the CA that signed the issuer's TLS certificate.
func (i *Issuer) CAPEM() []byte { return append([]byte(nil), i.caPEM...) }

// CertPool returns a pool holding only the issuer's CA.
func (i *Issuer) CertPool() *x509.CertPool { return i.caPool.Clone() }

// WriteCA writes the CA PEM to path (mode 0644).
func (i *Issuer) WriteCA(path string) error {
	if err := os.WriteFile(path, i.caPEM, 0o644); err != nil {
		return fmt.Errorf("oidctest: write CA: %w", err)
	}
	return nil
}

// KeyID returns the kid of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[0].kid
}

// Rotate makes a fresh RSA key the signing key. With keepOld the previous
// keys stay in the JWKS (as kube-apiserver does with several
// --service-account-key-file values); without it only the new key is
// published, so tokens signed before are no longer verifiable.
// It returns the new kid.
func (i *Issuer) Rotate(keepOld bool) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, i.opts.RSABits)
	if err != nil {
		return "", fmt.Errorf("oidctest: generate key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", fmt.Errorf("oidctest: marshal key: %w", err)
	}
	// kube-apiserver's kid: unpadded base64url of SHA-256 over the DER public key.
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	i.mu.Lock()
	defer i.mu.Unlock()
	if keepOld {
		i.keys = append([]signingKey{{kid: kid, key: k}}, i.keys...)
	} else {
		i.keys = []signingKey{{kid: kid, key: k}}
	}
	return kid, nil
}

// Mint signs a service-account token with the current key.
func (i *Issuer) Mint(c Claims) (string, error) {
	now := time.Now()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	if c.Lifetime == 0 {
		c.Lifetime = time.Hour
	}
	if c.Expiry.IsZero() {
		c.Expiry = c.IssuedAt.Add(c.Lifetime)
	}
	if c.Subject == "" {
		if c.Namespace == "" || c.ServiceAccount == "" {
			return "", errors.New("oidctest: Mint needs Subject or Namespace and ServiceAccount")
		}
		c.Subject = "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount
	}
	if len(c.Audience) == 0 {
		c.Audience = []string{DefaultAudience}
	}
	if c.Issuer == "" {
		c.Issuer = i.url
	}
	i.mu.Lock()
	sk := i.keys[0]
	i.mu.Unlock()
	kid := sk.kid
	if c.KeyID != "" {
		kid = c.KeyID
	}
	header := map[string]string{"alg": "RS256", "kid": kid}
	claims := map[string]any{
		"iss": c.Issuer,
		"sub": c.Subject,
		"aud": c.Audience,
		"iat": c.IssuedAt.Unix(),
		"nbf": c.NotBefore.Unix(),
		"exp": c.Expiry.Unix(),
	}
	if c.Namespace != "" && c.ServiceAccount != "" {
		k := map[string]any{
			"namespace":      c.Namespace,
			"serviceaccount": map[string]string{"name": c.ServiceAccount, "uid": "00000000-0000-0000-0000-000000000000"},
		}
		if c.PodName != "" || c.PodUID != "" {
			k["pod"] = map[string]string{"name": c.PodName, "uid": c.PodUID}
		}
		if c.NodeName != "" || c.NodeUID != "" {
			k["node"] = map[string]string{"name": c.NodeName, "uid": c.NodeUID}
		}
		claims["kubernetes.io"] = k
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	signing := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, sk.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("oidctest: sign: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ServiceAccountToken mints a default token (audience DefaultAudience, one
// hour) for namespace/serviceAccount.
func (i *Issuer) ServiceAccountToken(namespace, serviceAccount string) (string, error) {
	return i.Mint(Claims{Namespace: namespace, ServiceAccount: serviceAccount})
}

// WriteToken mints a token and writes it to path (mode 0600), the way the
// kubelet writes a projected token file. It returns the token.
func (i *Issuer) WriteToken(path string, c Claims) (string, error) {
	tok, err := i.Mint(c)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		return "", fmt.Errorf("oidctest: write token: %w", err)
	}
	return tok, nil
}

// JWKSRequests counts JWKS documents served (not the 406 refusals).
func (i *Issuer) JWKSRequests() int64 { return i.jwksHits.Load() }

// DiscoveryRequests counts discovery documents served.
func (i *Issuer) DiscoveryRequests() int64 { return i.discHits.Load() }

// NotAcceptable counts JWKS requests refused with 406.
func (i *Issuer) NotAcceptable() int64 { return i.rejected.Load() }

// Close stops the server.
func (i *Issuer) Close() error {
	return i.srv.Close()
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	i.discHits.Add(1)
	// The fields kube-apiserver publishes (it has no token endpoint).
	doc := map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.jwksURL,
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// acceptsJWKS reports whether the Accept header lists the JWK set media type
// (kube-apiserver's content negotiation refuses plain application/json).
func acceptsJWKS(accept string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && (mt == JWKSMediaType || mt == "*/*" || mt == "application/*") {
			return true
		}
	}
	return false
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if !acceptsJWKS(r.Header.Get("Accept")) {
		i.rejected.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotAcceptable)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"only the following media types are accepted: application/jwk-set+json","reason":"NotAcceptable","code":406}` + "\n"))
		return
	}
	i.jwksHits.Add(1)
	i.mu.Lock()
	keys := make([]map[string]string, 0, len(i.keys))
	for _, k := range i.keys {
		pub := k.key.PublicKey
		keys = append(keys, map[string]string{
			"use": "sig",
			"kty": "RSA",
			"kid": k.kid,
			"alg": "RS256",
			"n":   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		})
	}
	i.mu.Unlock()
	w.Header().Set("Content-Type", JWKSMediaType)
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "oidctest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: CA cert: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: CA cert: %w", err)
	}
	return cert, key, nil
}

func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, extraHost string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidctest: leaf key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "oidctest issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if ip := net.ParseIP(extraHost); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if extraHost != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, extraHost)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidctest: leaf cert: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}
