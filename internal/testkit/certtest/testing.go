package certtest

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// Must returns the value a function of this package made, failing t on its
// error: certtest.Must(t)(certtest.PFX(...)).
func Must(t testing.TB) func(string, error) string {
	return func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// ParseCerts returns the certificates of the PEM b in order, failing t on
// one that does not parse.
func ParseCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
