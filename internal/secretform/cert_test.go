package secretform

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/golden"
)

// bundleCase is a certificate-backed secret as Key Vault could hold it.
type bundleCase struct {
	name        string
	contentType string
	// make builds the value from fresh certificates: the golden file keeps
	// the first one made, the property test a new one each run.
	make func(t *testing.T, f *fixtures) string
	// noKey: the bundle has no private key; root: it holds the root.
	noKey, root bool
}

// fixtures are the certificates the cases share, made once per test binary.
type fixtures struct {
	rsa, ec       *certtest.Chain
	selfRSA       certtest.Cert
	once          sync.Once
	err           error
	otherKey      certtest.Cert // a key of no certificate in any bundle
	protectedPFX  string
	costlyPFX     string
	malformedDER  string
	wrongKeyPEM   string
	twoKeysPEM    string
	encryptedPEM  string
	onlyKeyPEM    string
	unknownBlock  string
	noRootPEM     string
	withRootPEM   string
	shuffledNoKey string
}

var fx fixtures

func (f *fixtures) get(t *testing.T) *fixtures {
	t.Helper()
	f.once.Do(func() { f.err = f.make() })
	if f.err != nil {
		t.Fatal(f.err)
	}
	return f
}

func (f *fixtures) make() (err error) {
	if f.rsa, err = certtest.NewChain(certtest.RSA, "web.example"); err != nil {
		return err
	}
	if f.ec, err = certtest.NewChain(certtest.EC, "web.example"); err != nil {
		return err
	}
	if f.selfRSA, err = certtest.SelfSigned(certtest.RSA, "self.example"); err != nil {
		return err
	}
	if f.otherKey, err = certtest.SelfSigned(certtest.EC, "other.example"); err != nil {
		return err
	}
	c := f.rsa
	if f.protectedPFX, err = certtest.PFX(pkcs12.Modern2023, "hunter2", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert); err != nil {
		return err
	}
	if f.costlyPFX, err = certtest.PFX(pkcs12.Modern2023.WithIterations(maxPFXIterations+1), "", c.Leaf.Key, c.Leaf.Cert); err != nil {
		return err
	}
	f.malformedDER = base64.StdEncoding.EncodeToString([]byte("\x30\x82\x01\x00 this is not PKCS#12"))
	if f.wrongKeyPEM, err = certtest.PEM(certtest.PKCS8Block(f.otherKey.Key), certtest.CertBlock(c.Leaf.Cert)); err != nil {
		return err
	}
	if f.twoKeysPEM, err = certtest.PEM(certtest.PKCS8Block(c.Leaf.Key), certtest.PKCS8Block(f.otherKey.Key), certtest.CertBlock(c.Leaf.Cert)); err != nil {
		return err
	}
	f.encryptedPEM = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n" + string(certtest.CertsPEM(c.Leaf.Cert))
	if f.onlyKeyPEM, err = certtest.PEM(certtest.PKCS8Block(c.Leaf.Key)); err != nil {
		return err
	}
	f.unknownBlock = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n" + string(certtest.CertsPEM(c.Leaf.Cert))
	if f.noRootPEM, err = certtest.PEM(certtest.PKCS8Block(c.Leaf.Key), certtest.CertBlock(c.Leaf.Cert), certtest.CertBlock(c.Intermediate.Cert)); err != nil {
		return err
	}
	if f.withRootPEM, err = certtest.PEM(certtest.CertBlock(c.Root.Cert), certtest.PKCS8Block(c.Leaf.Key), certtest.CertBlock(c.Intermediate.Cert), certtest.CertBlock(c.Leaf.Cert)); err != nil {
		return err
	}
	f.shuffledNoKey = string(certtest.CertsPEM(c.Intermediate.Cert, c.Leaf.Cert))
	return nil
}

var bundleCases = []bundleCase{
	{name: "pfx-rsa-modern-chain-root", contentType: spec.ContentTypePKCS12, root: true, make: func(t *testing.T, f *fixtures) string {
		c := f.rsa
		return certtest.Must(t)(certtest.PFX(pkcs12.Modern2023, "", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert, c.Root.Cert))
	}},
	{name: "pfx-ec-legacy3des-chain", contentType: spec.ContentTypePKCS12, make: func(t *testing.T, f *fixtures) string {
		c := f.ec
		return certtest.Must(t)(certtest.PFX(pkcs12.LegacyDES, "", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert))
	}},
	{name: "pfx-rsa-legacyrc2-selfsigned", contentType: spec.ContentTypePKCS12, root: true, make: func(t *testing.T, f *fixtures) string {
		return certtest.Must(t)(certtest.PFX(pkcs12.LegacyRC2, "", f.selfRSA.Key, f.selfRSA.Cert))
	}},
	{name: "pfx-ec-modern-leaf-not-first", contentType: spec.ContentTypePKCS12, root: true, make: func(t *testing.T, f *fixtures) string {
		c := f.ec
		return certtest.Must(t)(certtest.PFX(pkcs12.Modern2023, "", c.Leaf.Key, c.Root.Cert, c.Intermediate.Cert, c.Leaf.Cert))
	}},
	{name: "pem-rsa-keyvault-order", contentType: spec.ContentTypePEM, make: func(t *testing.T, f *fixtures) string {
		c := f.rsa
		return certtest.Must(t)(certtest.PEM(certtest.PKCS8Block(c.Leaf.Key), certtest.CertBlock(c.Leaf.Cert), certtest.CertBlock(c.Intermediate.Cert)))
	}},
	{name: "pem-ec-sec1-shuffled-root", contentType: spec.ContentTypePEM, root: true, make: func(t *testing.T, f *fixtures) string {
		c := f.ec
		return certtest.Must(t)(certtest.PEM(certtest.CertBlock(c.Intermediate.Cert), certtest.CertBlock(c.Root.Cert), certtest.LegacyKeyBlock(c.Leaf.Key), certtest.CertBlock(c.Leaf.Cert)))
	}},
	{name: "pem-rsa-pkcs1-no-content-type", contentType: "", make: func(t *testing.T, f *fixtures) string {
		c := f.rsa
		return certtest.Must(t)(certtest.PEM(certtest.LegacyKeyBlock(c.Leaf.Key), certtest.CertBlock(c.Leaf.Cert), certtest.CertBlock(c.Intermediate.Cert)))
	}},
	{name: "pem-ec-no-key", contentType: spec.ContentTypePEM, noKey: true, make: func(t *testing.T, f *fixtures) string {
		c := f.ec
		return string(certtest.CertsPEM(c.Intermediate.Cert, c.Leaf.Cert))
	}},
}

// formOutput is what a golden file records for a form: the file, or the
// problem line. A PFX is recorded decoded, since a new one has a new salt.
func formOutput(t *testing.T, s secret, form string) string {
	t.Helper()
	got, err := bundleCache{}.form(spec.SecretID{Name: "web-cert"}, s, form)
	if err != nil {
		var pe *PropertyError
		if !errors.As(err, &pe) {
			t.Fatalf("#%s: %T %v, want a *PropertyError", form, err, err)
		}
		return "problem: " + pe.Problem + "\nfix: " + pe.Fix + "\n"
	}
	if form != spec.CertFormPFX {
		return string(got)
	}
	key, leaf, others, err := pkcs12.DecodeChain(got, "")
	if err != nil {
		t.Fatalf("#pfx does not decode with an empty password: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})) + string(certtest.CertsPEM(append([]*x509.Certificate{leaf}, others...)...))
}

// TestCertFormsGolden checks every form of each committed bundle against
// testdata/certs/<case>.txtar. -update rewrites the expected sections; a
// missing file is made from new certificates.
func TestCertFormsGolden(t *testing.T) {
	for _, tc := range bundleCases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join("testdata", "certs", tc.name+".txtar")
			ar, err := txtar.ParseFile(path)
			update := *golden.Update // -update rewrites the expected sections; the inputs stay (delete a file to make new inputs)
			if errors.Is(err, os.ErrNotExist) {
				ar = &txtar.Archive{
					Comment: []byte("A certificate-backed secret (test certificates only) and what each form gives.\n"),
					Files: []txtar.File{{Name: "contentType", Data: []byte(tc.contentType + "\n")},
						{Name: "value", Data: []byte(tc.make(t, fx.get(t)) + "\n")}}}
				update = true
			} else if err != nil {
				t.Fatal(err)
			}
			sections := map[string]string{}
			for _, f := range ar.Files {
				sections[f.Name] = string(f.Data)
			}
			s := secret{ContentType: strings.TrimSuffix(sections["contentType"], "\n"), Value: strings.TrimSuffix(sections["value"], "\n")}
			forms := append(append([]string{}, spec.CertForms...), "password")
			out := txtar.Archive{Comment: ar.Comment, Files: ar.Files[:2]}
			for _, form := range forms {
				got := formOutput(t, s, form)
				out.Files = append(out.Files, txtar.File{Name: form, Data: []byte(got)})
				if !update {
					if diff := cmp.Diff(sections[form], got); diff != "" {
						t.Errorf("#%s (-want +got):\n%s", form, diff)
					}
				}
			}
			if update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, txtar.Format(&out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestCertForms checks what the forms mean, on new certificates: the key
// is the leaf's, the leaf verifies through #chain to #ca, #fullchain is
// #cert then #chain, and #pfx holds the same key and certificates.
func TestCertForms(t *testing.T) {
	f := fx.get(t)
	for _, tc := range bundleCases {
		t.Run(tc.name, func(t *testing.T) {
			s := secret{ContentType: tc.contentType, Value: tc.make(t, f)}
			forms := map[string][]byte{}
			errs := map[string]error{}
			cache := bundleCache{}
			for _, form := range spec.CertForms {
				forms[form], errs[form] = cache.form(spec.SecretID{Name: "web-cert"}, s, form)
			}
			for _, form := range []string{spec.CertFormCert, spec.CertFormChain, spec.CertFormFullchain} {
				if errs[form] != nil {
					t.Fatalf("#%s: %v", form, errs[form])
				}
			}
			leaf := certtest.ParseCerts(t, forms[spec.CertFormCert])
			if len(leaf) != 1 {
				t.Fatalf("#cert holds %d certificates, want 1", len(leaf))
			}
			if got, want := string(forms[spec.CertFormFullchain]), string(forms[spec.CertFormCert])+string(forms[spec.CertFormChain]); got != want {
				t.Errorf("#fullchain is not #cert then #chain")
			}
			if tc.noKey {
				for _, form := range []string{spec.CertFormKey, spec.CertFormPFX} {
					if errs[form] == nil {
						t.Errorf("#%s of a bundle without a key: no problem", form)
					}
				}
			} else {
				if errs[spec.CertFormKey] != nil {
					t.Fatalf("#key: %v", errs[spec.CertFormKey])
				}
				blk, _ := pem.Decode(forms[spec.CertFormKey])
				if blk == nil || blk.Type != "PRIVATE KEY" {
					t.Fatalf("#key is not a PKCS#8 PEM block")
				}
				key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf[0].PublicKey) {
					t.Errorf("#key does not match #cert")
				}
				pkey, pleaf, _, err := pkcs12.DecodeChain(forms[spec.CertFormPFX], "")
				if err != nil {
					t.Fatalf("#pfx: %v", err)
				}
				if !pleaf.Equal(leaf[0]) || !pkey.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf[0].PublicKey) {
					t.Errorf("#pfx does not hold #cert and #key")
				}
			}
			if !tc.root {
				if errs[spec.CertFormCA] == nil {
					t.Errorf("#ca of a bundle without its root: no problem")
				}
				return
			}
			if errs[spec.CertFormCA] != nil {
				t.Fatalf("#ca: %v", errs[spec.CertFormCA])
			}
			roots, inters := x509.NewCertPool(), x509.NewCertPool()
			for _, c := range certtest.ParseCerts(t, forms[spec.CertFormCA]) {
				roots.AddCert(c)
			}
			for _, c := range certtest.ParseCerts(t, forms[spec.CertFormChain]) {
				inters.AddCert(c)
			}
			if _, err := leaf[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: leaf[0].DNSNames[0]}); err != nil {
				t.Errorf("#cert does not verify through #chain to #ca: %v", err)
			}
		})
	}
}

// TestCertProblems: each broken bundle is one problem, worded without a
// byte of the bundle.
func TestCertProblems(t *testing.T) {
	f := fx.get(t)
	tests := []struct {
		name, contentType, form string
		value                   func() string
		want                    string
	}{
		{"not base64", spec.ContentTypePKCS12, "key", func() string { return "%%% not base64 %%%" },
			"the secret's content type is application/x-pkcs12 but its value (18 bytes) is not base64"},
		{"not PKCS#12", spec.ContentTypePKCS12, "cert", func() string { return f.malformedDER },
			"the value (24 bytes of PKCS#12) does not decode as one private key with its certificates"},
		{"password", spec.ContentTypePKCS12, "key", func() string { return f.protectedPFX },
			"the PKCS#12 bundle is protected by a password"},
		{"too many iterations", spec.ContentTypePKCS12, "key", func() string { return f.costlyPFX },
			"the PKCS#12 bundle asks for 200001 key-derivation iterations for the MAC, more than the 200000 kvinject runs"},
		{"too large", spec.ContentTypePEM, "cert", func() string { return strings.Repeat(f.noRootPEM, 60) },
			fmt.Sprintf("the value is %d bytes, more than the 65536 a certificate bundle may be", 60*len(f.noRootPEM))},
		{"key of no certificate", spec.ContentTypePEM, "fullchain", func() string { return f.wrongKeyPEM },
			"the PEM bundle's private key matches none of its certificates (1)"},
		{"two keys", spec.ContentTypePEM, "key", func() string { return f.twoKeysPEM },
			"the PEM bundle has more than one private key"},
		{"encrypted key", spec.ContentTypePEM, "key", func() string { return f.encryptedPEM },
			"the PEM bundle's private key is encrypted with a password"},
		{"no certificate", spec.ContentTypePEM, "key", func() string { return f.onlyKeyPEM },
			fmt.Sprintf("the value (%d bytes) holds no PEM certificate", len(f.onlyKeyPEM))},
		{"unknown block", spec.ContentTypePEM, "cert", func() string { return f.unknownBlock },
			`the PEM bundle has a "X509 CRL" block, which is neither a certificate nor a private key`},
		{"not a form", spec.ContentTypePKCS12, "tls.key", func() string { return f.protectedPFX },
			"the secret is a certificate (PKCS#12) and #tls.key is not one of its forms"},
		{"no root", spec.ContentTypePEM, "ca", func() string { return f.noRootPEM },
			"the PEM bundle holds no root (self-signed) certificate for the leaf"},
		{"no key for pfx", spec.ContentTypePEM, "pfx", func() string { return f.shuffledNoKey },
			"the PEM bundle has no private key, so #pfx has nothing to give"},
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(f.rsa.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bundleCache{}.form(spec.SecretID{Name: "web-cert"}, secret{ContentType: tt.contentType, Value: tt.value()}, tt.form)
			var pe *PropertyError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a *PropertyError", err)
			}
			if diff := cmp.Diff(tt.want, pe.Problem); diff != "" {
				t.Errorf("problem (-want +got):\n%s", diff)
			}
			assertNoKeyBytes(t, pe.Problem+pe.Detail+pe.Fix, keyDER)
		})
	}
}

// assertNoKeyBytes fails when text holds any 12-character run of a key's
// base64, the way a key would leak into a message.
func assertNoKeyBytes(t *testing.T, text string, keyDER []byte) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString(keyDER)
	for i := 0; i+12 <= len(b64); i += 4 {
		if strings.Contains(text, b64[i:i+12]) {
			t.Fatalf("the text holds key bytes: %q", text)
		}
	}
}

// craftedCostlyPFX are PKCS#12 files whose key derivations the decoder
// would run for days (2^40 iterations), each hidden where a walk that reads
// only "an INTEGER after an OCTET STRING" does not look: inside encrypted
// contents, behind a salt with another tag, in a PBMAC1 MAC.
func craftedCostlyPFX() map[string][]byte {
	const huge = 1 << 40
	salt, iv := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	key3DES := certtest.ShroudedKeyBag(certtest.PBEAlg(certtest.OIDPBEWithSHA3DES, salt, huge), make([]byte, 16))
	return map[string][]byte{
		"shrouded key inside encrypted contents": certtest.AssemblePFX(nil,
			certtest.EncryptedContent(certtest.PBES2Alg(certtest.OctetSalt(salt), 2048, iv),
				certtest.EncryptPBES2(certtest.SafeContents(key3DES), salt, 2048, iv))),
		"PBES2 key with a context-tagged salt": certtest.AssemblePFX(nil,
			certtest.DataContent(certtest.SafeContents(certtest.ShroudedKeyBag(certtest.PBES2Alg(certtest.ContextSalt(salt), huge, iv), make([]byte, 16))))),
		"PBMAC1 with a context-tagged salt": certtest.AssemblePFX(
			certtest.MacData(certtest.PBMAC1Alg(certtest.ContextSalt(salt), huge), make([]byte, 32), salt, 1),
			certtest.DataContent(certtest.SafeContents())),
	}
}

// TestPFXWorkBound: a PKCS#12 bundle that asks for more key-derivation
// work than the bound is refused at once, wherever the count hides.
func TestPFXWorkBound(t *testing.T) {
	for name, der := range craftedCostlyPFX() {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := bundleCache{}.form(spec.SecretID{Name: "web-cert"}, secret{ContentType: spec.ContentTypePKCS12, Value: base64.StdEncoding.EncodeToString(der)}, "key")
				done <- err
			}()
			select {
			case err := <-done:
				var pe *PropertyError
				if !errors.As(err, &pe) || !strings.Contains(pe.Problem, "1099511627776 key-derivation iterations") {
					t.Fatalf("got %v, want the bundle refused for its 2^40 iterations", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("still parsing after 10s: the bundle's key derivation was not bounded")
			}
		})
	}
}
