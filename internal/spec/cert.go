package spec

import "strings"

// Content types Key Vault gives the secret that backs a certificate object:
// the whole certificate with its private key, as PKCS#12 (base64) or PEM.
const (
	ContentTypePKCS12 = "application/x-pkcs12"
	ContentTypePEM    = "application/x-pem-file"
)

// Certificate forms: for a certificate-backed secret, the # part of a
// reference selects one of these instead of a JSON property.
const (
	// CertFormKey is the private key, PKCS#8 PEM.
	CertFormKey = "key"
	// CertFormCert is the leaf: the certificate matching the private key.
	CertFormCert = "cert"
	// CertFormChain is the intermediates, PEM, the leaf's issuer first.
	CertFormChain = "chain"
	// CertFormFullchain is the leaf then the intermediates, PEM.
	CertFormFullchain = "fullchain"
	// CertFormCA is the root (self-signed) certificate, PEM.
	CertFormCA = "ca"
	// CertFormPFX is the key and every certificate as PKCS#12, binary,
	// with an empty password.
	CertFormPFX = "pfx"
)

// CertForms lists the certificate forms in the order the docs give them.
var CertForms = []string{CertFormKey, CertFormCert, CertFormChain, CertFormFullchain, CertFormCA, CertFormPFX}

// IsCertForm reports whether a reference's # part names a certificate form.
func IsCertForm(path string) bool {
	for _, f := range CertForms {
		if path == f {
			return true
		}
	}
	return false
}

// CertContentType reports whether a secret's content type is a
// certificate's (parameters and case ignored), and returns it normalised.
func CertContentType(ct string) (string, bool) {
	base, _, _ := strings.Cut(ct, ";")
	base = strings.ToLower(strings.TrimSpace(base))
	return base, base == ContentTypePKCS12 || base == ContentTypePEM
}
