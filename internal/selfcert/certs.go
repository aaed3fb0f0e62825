package selfcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"time"
)

// Keys of the Secret.
const (
	KeyCACert   = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCABundle = "ca-bundle.crt"
	KeyTLSCert  = "tls.crt" // corev1.TLSCertKey
	KeyTLSKey   = "tls.key" // corev1.TLSPrivateKeyKey
)

// FileCABundle is the file in CertDir holding the CA bundle (the Secret's ca-bundle.crt): what
// signs the cache's certificate, for the webhook's --cache-ca-file. The cache's Secret holds
// the same bundle under this key.
const FileCABundle = "ca.crt"

// caCommonNamePrefix starts the subject of every CA this package makes.
const caCommonNamePrefix = "kvinject-webhook-ca@"

// keyPair is a certificate and its private key, with their PEM forms.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// state is what the Secret holds.
type state struct {
	ca      keyPair
	bundle  []*x509.Certificate // the current CA first, then older unexpired CAs, newest first
	serving keyPair
}

func (s *state) data() map[string][]byte {
	return map[string][]byte{
		KeyCACert:   s.ca.certPEM,
		KeyCAKey:    s.ca.keyPEM,
		KeyCABundle: encodeCerts(s.bundle),
		KeyTLSCert:  s.serving.certPEM,
		KeyTLSKey:   s.serving.keyPEM,
	}
}

// cacheState is what the cache's Secret holds: its serving certificate and the CA bundle.
type cacheState struct {
	serving keyPair
	bundle  []byte
}

func (c *cacheState) data() map[string][]byte {
	return map[string][]byte{
		FileCABundle: c.bundle,
		KeyTLSCert:   c.serving.certPEM,
		KeyTLSKey:    c.serving.keyPEM,
	}
}

// renewAt is when a certificate is due for renewal: at 2/3 of its lifetime.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// fresh tells whether c is valid at now and not yet due for renewal.
func fresh(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && now.Before(renewAt(c))
}

// plan computes the Secret's wanted content from its current data (nil when there is no
// Secret) at now. It reuses everything still fresh, so an up-to-date Secret gives back its own
// bytes; reasons say what changed (empty: nothing).
func plan(data map[string][]byte, o *Options, now time.Time) (*state, []string, error) {
	var reasons []string
	st := &state{}
	ca, err := parseKeyPair(data[KeyCACert], data[KeyCAKey])
	switch {
	case err != nil:
		reasons = append(reasons, "no usable CA ("+err.Error()+")")
		ca = nil
	case !ca.cert.IsCA:
		reasons = append(reasons, "ca.crt is not a CA")
		ca = nil
	case !fresh(ca.cert, now):
		reasons = append(reasons, "CA due for renewal (valid until "+ca.cert.NotAfter.UTC().Format(time.RFC3339)+")")
		ca = nil
	case outlives(ca.cert, o.CAValidity):
		reasons = append(reasons, "CA lives longer than the configured "+o.CAValidity.String())
		ca = nil
	}
	if ca == nil {
		if ca, err = newCA(o.CAValidity, now); err != nil {
			return nil, nil, err
		}
	}
	st.ca = *ca

	// The bundle: the current CA, then every other unexpired CA we made before.
	old, _ := parseCerts(data[KeyCABundle])
	if c, err := parseCert(data[KeyCACert]); err == nil {
		old = append(old, c) // a CA being replaced joins the bundle
	}
	st.bundle = mergeCAs([]*x509.Certificate{ca.cert}, old, now)

	srv, err := parseKeyPair(data[KeyTLSCert], data[KeyTLSKey])
	signed := func(c *x509.Certificate) bool { return c.CheckSignatureFrom(ca.cert) == nil }
	if r := reissueReason("serving", srv, err, signed, "the current CA", o.dnsNames, o.CertValidity, now); r != "" {
		reasons = append(reasons, r)
		srv = nil
	}
	if srv == nil {
		if srv, err = newServing(ca, o.dnsNames, o.CertValidity, now); err != nil {
			return nil, nil, err
		}
	}
	st.serving = *srv

	if len(reasons) == 0 && !bytes.Equal(data[KeyCABundle], encodeCerts(st.bundle)) {
		reasons = append(reasons, "CA bundle out of date")
	}
	return st, reasons, nil
}

// reissueReason says why a serving certificate (kind "serving" or "cache",
// parsed as kp, err) must be issued again, or "" when it may stay: it must
// parse, be signed as signed says (by signer), name exactly names, not be
// due for renewal, and not outlive validity.
func reissueReason(kind string, kp *keyPair, err error, signed func(*x509.Certificate) bool, signer string, names []string, validity time.Duration, now time.Time) string {
	switch {
	case err != nil:
		return "no usable " + kind + " certificate (" + err.Error() + ")"
	case !signed(kp.cert):
		return kind + " certificate not signed by " + signer
	case !sameNames(kp.cert.DNSNames, names):
		return fmt.Sprintf("%s certificate names %v, want %v", kind, kp.cert.DNSNames, names)
	case !fresh(kp.cert, now):
		return kind + " certificate due for renewal (valid until " + kp.cert.NotAfter.UTC().Format(time.RFC3339) + ")"
	case outlives(kp.cert, validity):
		return kind + " certificate lives longer than the configured " + validity.String()
	}
	return ""
}

// planCache computes the cache's Secret's wanted content from its current data (nil when there
// is no Secret), given the webhook's Secret st, at now. The cache's certificate may be signed by
// any CA of the bundle, not only the current one: after a CA rotation it moves to the new CA at
// its own renewal, so pods given the bundle before the rotation keep trusting the cache for as
// long as they can.
func planCache(data map[string][]byte, st *state, o *Options, now time.Time) (*cacheState, []string, error) {
	var reasons []string
	srv, err := parseKeyPair(data[KeyTLSCert], data[KeyTLSKey])
	signed := func(c *x509.Certificate) bool {
		return slices.ContainsFunc(st.bundle, func(ca *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil })
	}
	if r := reissueReason("cache", srv, err, signed, "a CA of the bundle", o.cacheDNSNames, o.CertValidity, now); r != "" {
		reasons = append(reasons, r)
		srv = nil
	}
	if srv == nil {
		if srv, err = newServing(&st.ca, o.cacheDNSNames, o.CertValidity, now); err != nil {
			return nil, nil, err
		}
	}
	cs := &cacheState{serving: *srv, bundle: encodeCerts(st.bundle)}
	if len(reasons) == 0 && !bytes.Equal(data[FileCABundle], cs.bundle) {
		reasons = append(reasons, "CA bundle out of date")
	}
	return cs, reasons, nil
}

// mergeCAs returns first, then the CAs of others not in first and not expired at now, newest
// first, without duplicates.
func mergeCAs(first, others []*x509.Certificate, now time.Time) []*x509.Certificate {
	out := slices.Clone(first)
	var extra []*x509.Certificate
	for _, c := range others {
		if !c.IsCA || !now.Before(c.NotAfter) || containsCert(out, c) || containsCert(extra, c) {
			continue
		}
		extra = append(extra, c)
	}
	sort.SliceStable(extra, func(i, j int) bool { return extra[i].NotBefore.After(extra[j].NotBefore) })
	return append(out, extra...)
}

// caBundleFor is the caBundle a replica whose Secret holds ours wants, given the caBundle
// currently in the webhook configuration: ours, plus any unexpired CA there that is newer than
// all of ours (put there by a replica that saw a newer Secret).
func caBundleFor(ours []*x509.Certificate, current []byte, now time.Time) []byte {
	var newest time.Time
	for _, c := range ours {
		if c.NotBefore.After(newest) {
			newest = c.NotBefore
		}
	}
	cur, _ := parseCerts(current)
	var newer []*x509.Certificate
	for _, c := range cur {
		if c.NotBefore.After(newest) {
			newer = append(newer, c)
		}
	}
	return encodeCerts(mergeCAs(mergeCAs(nil, newer, now), ours, now))
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(list, func(x *x509.Certificate) bool { return x.Equal(c) })
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// outlives tells whether c was issued for longer than validity: a shortened
// validity takes effect at once, not when the old certificate is due.
func outlives(c *x509.Certificate, validity time.Duration) bool {
	return c.NotAfter.Sub(c.NotBefore) > validity+backdate(validity)+time.Second
}

// backdate allows for clock skew between replicas and the API server.
func backdate(validity time.Duration) time.Duration {
	return min(5*time.Minute, validity/10)
}

func newCA(validity time.Duration, now time.Time) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s%d", caCommonNamePrefix, now.UnixNano())},
		NotBefore:             now.Add(-backdate(validity)),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return issue(tmpl, nil)
}

func newServing(ca *keyPair, dnsNames []string, validity time.Duration, now time.Time) (*keyPair, error) {
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter // never outlive the CA (see the package doc)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: dnsNames[0]},
		DNSNames:              slices.Clone(dnsNames),
		NotBefore:             now.Add(-backdate(validity)),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return issue(tmpl, ca)
}

// issue signs tmpl with a fresh P-256 key, by parent, or by itself when parent is nil.
func issue(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl.SerialNumber = serial
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func parseKeyPair(certPEM, keyPEM []byte) (*keyPair, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("private key does not match the certificate")
	}
	return &keyPair{cert: cert, key: signer, certPEM: certPEM, keyPEM: keyPEM}, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("want one PEM certificate, found %d", len(certs))
	}
	return certs[0], nil
}

// parseCerts parses the PEM certificates in b, skipping other blocks.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return out, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}
