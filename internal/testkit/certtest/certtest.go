// Package certtest makes certificate hierarchies for tests: a root, an
// intermediate and a leaf, with RSA or EC keys, and the bundles Key Vault
// keeps for a certificate object (PKCS#12 in the modern and legacy
// encodings, PEM in any order).
package certtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Alg is a key algorithm.
type Alg string

const (
	RSA Alg = "rsa" // RSA 2048
	EC  Alg = "ec"  // ECDSA P-256
)

// NewKey makes a private key.
func NewKey(alg Alg) (crypto.Signer, error) {
	switch alg {
	case RSA:
		return rsa.GenerateKey(rand.Reader, 2048)
	case EC:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("certtest: unknown key algorithm %q", alg)
}

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Chain is a root CA, an intermediate CA it signed, and a leaf the
// intermediate signed for Hosts (DNS names or IP addresses).
type Chain struct {
	Root, Intermediate, Leaf Cert
}

// validity is long enough that committed fixtures never expire.
const validity = 100 * 365 * 24 * time.Hour

// NewChain makes a chain whose keys are all of alg.
func NewChain(alg Alg, hosts ...string) (*Chain, error) {
	root, err := newCert(alg, "kvinject test root", nil, true, nil)
	if err != nil {
		return nil, err
	}
	inter, err := newCert(alg, "kvinject test intermediate", &root, true, nil)
	if err != nil {
		return nil, err
	}
	leaf, err := newCert(alg, "kvinject test leaf", &inter, false, hosts)
	if err != nil {
		return nil, err
	}
	return &Chain{Root: root, Intermediate: inter, Leaf: leaf}, nil
}

// SelfSigned makes a self-signed leaf, as Key Vault's "Self" issuer does.
func SelfSigned(alg Alg, hosts ...string) (Cert, error) {
	return newCert(alg, "kvinject test self-signed", nil, false, hosts)
}

func newCert(alg Alg, cn string, parent *Cert, isCA bool, hosts []string) (Cert, error) {
	key, err := NewKey(alg)
	if err != nil {
		return Cert{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return Cert{}, err
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"kvinject tests"}},
		NotBefore:             now,
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if alg == RSA {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	issuerCert, issuerKey := tmpl, key
	if parent != nil {
		issuerCert, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return Cert{}, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, err
	}
	return Cert{Cert: c, Key: key}, nil
}

// PFX encodes a key and certificates, in the given order, as Key Vault's
// PKCS#12 secret value: base64 of the DER. enc is pkcs12.Modern2023 (what
// Key Vault and OpenSSL 3 write), pkcs12.LegacyDES or pkcs12.LegacyRC2.
func PFX(enc *pkcs12.Encoder, password string, key crypto.Signer, certs ...*x509.Certificate) (string, error) {
	if len(certs) == 0 {
		return "", fmt.Errorf("certtest: a PFX needs a certificate")
	}
	der, err := enc.Encode(key, certs[0], certs[1:], password)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// PEMBlock is one part of a PEM bundle.
type PEMBlock func() (*pem.Block, error)

// CertBlock is a certificate's PEM block.
func CertBlock(c *x509.Certificate) PEMBlock {
	return func() (*pem.Block, error) { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}, nil }
}

// PKCS8Block is a key as PKCS#8 ("PRIVATE KEY"), as Key Vault writes it.
func PKCS8Block(k crypto.Signer) PEMBlock {
	return func() (*pem.Block, error) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, err
	}
}

// LegacyKeyBlock is a key in its algorithm's own form: PKCS#1 ("RSA
// PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"), as older tools write it.
func LegacyKeyBlock(k crypto.Signer) PEMBlock {
	return func() (*pem.Block, error) {
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}, nil
		case *ecdsa.PrivateKey:
			der, err := x509.MarshalECPrivateKey(k)
			return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}, err
		}
		return nil, fmt.Errorf("certtest: no legacy form for %T", k)
	}
}

// PEM joins blocks into a bundle, in the given order.
func PEM(blocks ...PEMBlock) (string, error) {
	var b bytes.Buffer
	for _, mk := range blocks {
		blk, err := mk()
		if err != nil {
			return "", err
		}
		if err := pem.Encode(&b, blk); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// CertsPEM is certificates as PEM, in the given order.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
