package secretform

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/pfxcheck"
	"github.com/kvinject/kvinject/internal/spec"
)

// Bounds on a bundle, so that a hostile value costs the agent little.
const (
	// maxBundleCertificates bounds the certificates of one bundle: the
	// chain is built pairwise.
	maxBundleCertificates = 32
	// maxBundleSize is well over Key Vault's 25 KB per secret.
	maxBundleSize = 64 << 10
	// maxPFXIterations bounds each key derivation of a PKCS#12 file, whose
	// count the file itself sets (pfxcheck).
	maxPFXIterations = pfxcheck.MaxIterations
)

// certBundle is a certificate-backed secret taken apart: its private key,
// the leaf that key belongs to, the intermediates and the root.
type certBundle struct {
	key   crypto.Signer       // nil when the bundle has none
	leaf  *x509.Certificate   //
	chain []*x509.Certificate // intermediates, the leaf's issuer first
	root  *x509.Certificate   // the self-signed end of the leaf's path, or nil
	pfx   []byte              // the PKCS#12 as Key Vault holds it, when it is one
	// pfxLeaf is the certificate readers of pfx take for the leaf: its
	// first. pfx is given unchanged only when that is the leaf.
	pfxLeaf *x509.Certificate
	kind    string // "PKCS#12" or "PEM", for diagnostics
}

// BundleError is a bundle that does not parse: the secret's problem,
// whatever forms its references select, so a caller reports it once per
// secret.
type BundleError struct{ *PropertyError }

func (e *BundleError) Unwrap() error { return e.PropertyError }

// bundleCache parses each certificate-backed secret once per run.
type bundleCache map[spec.SecretID]bundleResult

type bundleResult struct {
	b   *certBundle
	err error
}

// form returns a certificate form of the secret id, parsing it on first use.
func (c bundleCache) form(id spec.SecretID, s secret, form string) ([]byte, error) {
	if !spec.IsCertForm(form) {
		kind := "PEM"
		if ct, _ := spec.CertContentType(s.ContentType); ct == spec.ContentTypePKCS12 {
			kind = "PKCS#12"
		}
		return nil, errNotCertForm(kind, form)
	}
	r, ok := c[id]
	if !ok {
		r.b, r.err = parseCertBundle(s)
		c[id] = r
	}
	if r.err != nil {
		return nil, r.err
	}
	return r.b.form(form)
}

// certProblem is a PropertyError for a certificate form: it names the form,
// the bundle's kind and what is wrong, never a byte of the bundle.
func certProblem(form, problem, fix string) *PropertyError {
	return &PropertyError{Path: form, Problem: problem, Fix: fix}
}

// badBundle is a BundleError: what is wrong with the bundle, and the fix.
func badBundle(problem, fix string) *BundleError {
	return &BundleError{&PropertyError{Problem: problem, Fix: fix}}
}

// isCertRef reports whether a ref's # part selects a certificate form of
// this secret: the content type is a certificate's, or, for a secret stored
// by hand without one, the value is PEM.
func isCertRef(s secret, path string) bool {
	if path == "" {
		return false
	}
	if _, ok := spec.CertContentType(s.ContentType); ok {
		return true
	}
	return s.ContentType == "" && spec.IsCertForm(path) && strings.HasPrefix(strings.TrimSpace(s.Value), "-----BEGIN ")
}

// parseCertBundle takes a certificate-backed secret apart. Its errors are
// *PropertyError, worded from what was found, never from library errors
// that might quote the input.
func parseCertBundle(s secret) (*certBundle, error) {
	ct, ok := spec.CertContentType(s.ContentType)
	if !ok {
		ct = spec.ContentTypePEM // a PEM value without a content type
	}
	if len(s.Value) > maxBundleSize {
		return nil, badBundle(fmt.Sprintf("the value is %d bytes, more than the %d a certificate bundle may be", len(s.Value), maxBundleSize), "")
	}
	var (
		b     *certBundle
		certs []*x509.Certificate
		err   error
	)
	if ct == spec.ContentTypePKCS12 {
		b, certs, err = parsePKCS12(s.Value)
	} else {
		b, certs, err = parsePEMBundle(s.Value)
	}
	if err != nil {
		return nil, err
	}
	if err := b.arrange(certs); err != nil {
		return nil, err
	}
	return b, nil
}

func parsePKCS12(value string) (*certBundle, []*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(value), ""))
	if err != nil {
		return nil, nil, badBundle(
			fmt.Sprintf("the secret's content type is %s but its value (%d bytes) is not base64", spec.ContentTypePKCS12, len(value)),
			"store the certificate through Key Vault's certificate import, or fix the secret's content type")
	}
	if err := pfxcheck.Check(der); err != nil {
		return nil, nil, pfxWorkProblem(err, len(der))
	}
	key, leaf, others, err := pkcs12.DecodeChain(der, "")
	if err != nil {
		var notImpl pkcs12.NotImplementedError
		switch {
		case errors.Is(err, pkcs12.ErrIncorrectPassword):
			return nil, nil, badBundle("the PKCS#12 bundle is protected by a password",
				"import the certificate into Key Vault without a password (Key Vault keeps its own PFX password-less)")
		case errors.As(err, &notImpl):
			return nil, nil, badBundle("the PKCS#12 bundle uses a structure kvinject does not read ("+notImpl.Error()+")",
				"re-export it with one private key and its certificates, e.g. openssl pkcs12 -export")
		default:
			return nil, nil, badBundle(fmt.Sprintf("the value (%d bytes of PKCS#12) does not decode as one private key with its certificates", len(der)),
				"check the bundle with openssl pkcs12 -info -nokeys -passin pass: -in FILE; a PKCS#12 without a private key is not read: store such certificates as PEM")
		}
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, badBundle(fmt.Sprintf("the PKCS#12 bundle's private key is a %T, not an RSA, EC or Ed25519 key", key), "")
	}
	return &certBundle{key: signer, pfx: der, pfxLeaf: leaf, kind: "PKCS#12"}, append([]*x509.Certificate{leaf}, others...), nil
}

// pfxWorkProblem words a refusal of pfxcheck.Check: the decoder would
// have derived a key with a count nobody bounded.
func pfxWorkProblem(err error, n int) *BundleError {
	var limit *pfxcheck.LimitError
	var structure *pfxcheck.StructureError
	switch {
	case errors.As(err, &limit):
		return badBundle(fmt.Sprintf("the PKCS#12 bundle asks for %d key-derivation iterations for %s, more than the %d kvinject runs", limit.Iterations, limit.Where, maxPFXIterations),
			"re-export it with the usual 2,048 iterations (openssl pkcs12 -export -iter 2048 -maciter)")
	case errors.Is(err, pfxcheck.ErrPassword):
		return badBundle("the PKCS#12 bundle is protected by a password",
			"import the certificate into Key Vault without a password (Key Vault keeps its own PFX password-less)")
	case errors.As(err, &structure):
		b := badBundle(fmt.Sprintf("the value (%d bytes of PKCS#12) does not decode as one private key with its certificates", n),
			"re-export it with one private key and its certificates, e.g. openssl pkcs12 -export")
		b.Detail = structure.Error()
		return b
	}
	return badBundle(fmt.Sprintf("the value (%d bytes of PKCS#12) does not decode as one private key with its certificates", n), "")
}

func parsePEMBundle(value string) (*certBundle, []*x509.Certificate, error) {
	b := &certBundle{kind: "PEM"}
	var certs []*x509.Certificate
	rest := []byte(value)
	keys := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, badBundle(fmt.Sprintf("certificate %d of the PEM bundle does not parse as X.509", len(certs)+1), "")
			}
			if len(certs) == maxBundleCertificates {
				return nil, nil, badBundle(fmt.Sprintf("the PEM bundle has more than %d certificates", maxBundleCertificates), "")
			}
			certs = append(certs, c)
		case block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, nil, badBundle("the PEM bundle's private key is encrypted with a password",
				"store the key unencrypted (openssl pkey -in KEY -out KEY.plain); Key Vault protects it at rest")
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			keys++
			if keys > 1 {
				return nil, nil, badBundle("the PEM bundle has more than one private key", "keep one key, the leaf's, in the bundle")
			}
			k, err := parsePEMKey(block)
			if err != nil {
				return nil, nil, badBundle(fmt.Sprintf("the PEM bundle's %s block does not parse as an RSA, EC or Ed25519 key", block.Type), "")
			}
			b.key = k
		case block.Type == "EC PARAMETERS":
			// openssl ecparam writes these beside an EC key; the key has them.
		default:
			return nil, nil, badBundle(fmt.Sprintf("the PEM bundle has a %q block, which is neither a certificate nor a private key", block.Type), "")
		}
	}
	if len(certs) == 0 {
		return nil, nil, badBundle(fmt.Sprintf("the value (%d bytes) holds no PEM certificate", len(value)),
			"store the certificate as PEM blocks (-----BEGIN CERTIFICATE-----), or fix the secret's content type")
	}
	return b, certs, nil
}

func parsePEMKey(block *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}

// arrange picks the leaf (the certificate matching the private key, or,
// without one, the certificate that issued none of the others), then
// follows the issuers from it: the intermediates in path order, then the
// bundle's other certificates in bundle order, and the self-signed root
// apart. The bundle's own order does not matter.
func (b *certBundle) arrange(certs []*x509.Certificate) error {
	if len(certs) > maxBundleCertificates {
		return badBundle(fmt.Sprintf("the %s bundle has more than %d certificates", b.kind, maxBundleCertificates), "")
	}
	leaf := -1
	if b.key != nil {
		type equaler interface{ Equal(crypto.PublicKey) bool }
		pub, ok := b.key.Public().(equaler)
		for i, c := range certs {
			if ok && pub.Equal(c.PublicKey) {
				leaf = i
				break
			}
		}
		if leaf < 0 {
			return badBundle(fmt.Sprintf("the %s bundle's private key matches none of its certificates (%d)", b.kind, len(certs)),
				"put the key and its own certificate in the bundle (compare openssl x509 -noout -pubkey with openssl pkey -pubout)")
		}
	} else {
		leaf = leafWithoutKey(certs)
	}
	used := make([]bool, len(certs))
	used[leaf] = true
	b.leaf = certs[leaf]
	for cur := b.leaf; !isSelfSigned(cur); {
		next := -1
		for i, c := range certs {
			if !used[i] && cur.CheckSignatureFrom(c) == nil {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		used[next] = true
		cur = certs[next]
		if isSelfSigned(cur) {
			b.root = cur
			break
		}
		b.chain = append(b.chain, cur)
	}
	if b.root == nil && isSelfSigned(b.leaf) {
		b.root = b.leaf
	}
	for i, c := range certs {
		if !used[i] {
			b.chain = append(b.chain, c)
		}
	}
	return nil
}

// leafWithoutKey is the first certificate that issued none of the others,
// preferring one that is not a CA.
func leafWithoutKey(certs []*x509.Certificate) int {
	best := -1
	for i, c := range certs {
		issuer := false
		for j, o := range certs {
			if i != j && !isSelfSigned(o) && o.CheckSignatureFrom(c) == nil {
				issuer = true
				break
			}
		}
		if issuer {
			continue
		}
		if !c.IsCA {
			return i
		}
		if best < 0 {
			best = i
		}
	}
	if best < 0 {
		return 0 // a loop of cross-signed certificates: take the bundle's first
	}
	return best
}

// isSelfSigned checks the signature itself: CheckSignatureFrom would
// refuse a self-signed leaf that is not a CA, as Key Vault's "Self" issuer
// makes.
func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// form returns what a certificate form's file holds.
func (b *certBundle) form(form string) ([]byte, error) {
	switch form {
	case spec.CertFormKey:
		if b.key == nil {
			return nil, certProblem(form, "the "+b.kind+" bundle has no private key, so #key has nothing to give",
				"add the key to the bundle, or use #cert, #chain or #fullchain")
		}
		der, err := x509.MarshalPKCS8PrivateKey(b.key)
		if err != nil {
			return nil, certProblem(form, fmt.Sprintf("the bundle's %T private key cannot be written as PKCS#8", b.key), "")
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	case spec.CertFormCert:
		return pemCerts(b.leaf), nil
	case spec.CertFormChain:
		return pemCerts(b.chain...), nil
	case spec.CertFormFullchain:
		return pemCerts(append([]*x509.Certificate{b.leaf}, b.chain...)...), nil
	case spec.CertFormCA:
		if b.root == nil {
			return nil, certProblem(form, fmt.Sprintf("the %s bundle holds no root (self-signed) certificate for the leaf", b.kind),
				"a certificate from a public CA usually comes without its root: give clients the CA from its publisher, or use #chain")
		}
		return pemCerts(b.root), nil
	case spec.CertFormPFX:
		if b.pfx != nil && b.pfxLeaf == b.leaf {
			return b.pfx, nil
		}
		if b.key == nil {
			return nil, certProblem(form, "the "+b.kind+" bundle has no private key, so #pfx has nothing to give",
				"add the key to the bundle, or use #cert, #chain or #fullchain")
		}
		others := append([]*x509.Certificate{}, b.chain...)
		if b.root != nil && b.root != b.leaf {
			others = append(others, b.root)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(b.key)
		if err != nil {
			return nil, certProblem(form, fmt.Sprintf("the bundle's %T private key cannot be written as PKCS#12", b.key), "")
		}
		// Salts and IVs drawn from the content itself: the password is
		// empty, so randomness protects nothing, and the same bundle then
		// gives the same file, which a refresh sees as unchanged.
		seed := sha256.New()
		seed.Write(keyDER)
		for _, c := range append([]*x509.Certificate{b.leaf}, others...) {
			seed.Write(c.Raw)
		}
		pfx, err := pkcs12.Modern2023.WithRand(rand.NewChaCha8([32]byte(seed.Sum(nil)))).Encode(b.key, b.leaf, others, "")
		if err != nil {
			return nil, certProblem(form, "the bundle cannot be written as PKCS#12", "")
		}
		return pfx, nil
	}
	return nil, errNotCertForm(b.kind, form)
}

// errNotCertForm is the problem of a # part that is no certificate form,
// on a secret that is a certificate.
func errNotCertForm(kind, form string) error {
	return certProblem(form, fmt.Sprintf("the secret is a certificate (%s) and #%s is not one of its forms", kind, form), certFormsFix)
}

var certFormsFix = "use #" + strings.Join(spec.CertForms, ", #") + ", or no # for the value as Key Vault stores it"

func pemCerts(certs ...*x509.Certificate) []byte {
	var out bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return out.Bytes()
}
