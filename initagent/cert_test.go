package initagent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
)

// fixtures are the certificates the agent's certificate tests share, made
// once per test binary. The forms themselves are tested in secretform.
type fixtures struct {
	rsa, ec      *certtest.Chain
	protectedPFX string
	once         sync.Once
	err          error
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
	c := f.rsa
	f.protectedPFX, err = certtest.PFX(pkcs12.Modern2023, "hunter2", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert)
	return err
}

// TestRunCertificate runs the agent on a certificate-backed secret: the
// key and the full chain land in their files, and a broken bundle is one
// problem for the secret, naming every file it kept from being written.
func TestRunCertificate(t *testing.T) {
	f := fx.get(t)
	c := f.rsa
	good := certtest.Must(t)(certtest.PFX(pkcs12.Modern2023, "", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert))
	files := func() []spec.File {
		return []spec.File{secretFile("tls.key", "0400", "web-cert#key"), secretFile("tls.crt", "0444", "web-cert#fullchain"),
			templateFile(t, "both.pem", `{{ secret "web-cert#cert" }}{{ secret "web-cert#key" }}`)}
	}
	t.Run("written", func(t *testing.T) {
		dir := t.TempDir()
		vault := newFakeVault(map[string]string{"web-cert": good})
		vault.types = map[string]string{"web-cert": spec.ContentTypePKCS12}
		var errs bytes.Buffer
		a, err := New(Options{Spec: mustSpec(t, dir, files()...), Err: &errs, Logger: testLogger(&bytes.Buffer{}),
			NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Run(context.Background()); err != nil {
			t.Fatalf("Run: %v\n%s", err, errs.String())
		}
		read := func(name string) []byte {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if got := certtest.ParseCerts(t, read("tls.crt")); len(got) != 2 || !got[0].Equal(c.Leaf.Cert) || !got[1].Equal(c.Intermediate.Cert) {
			t.Errorf("tls.crt is not the leaf then the intermediate")
		}
		if !bytes.Contains(read("both.pem"), read("tls.key")) {
			t.Errorf("the template's #key differs from the file's")
		}
		if vault.calls["web-cert"] != 1 {
			t.Errorf("web-cert read %d times, want once", vault.calls["web-cert"])
		}
	})
	t.Run("password-protected", func(t *testing.T) {
		dir := t.TempDir()
		vault := newFakeVault(map[string]string{"web-cert": f.protectedPFX})
		vault.types = map[string]string{"web-cert": spec.ContentTypePKCS12}
		var errs bytes.Buffer
		a, err := New(Options{Spec: mustSpec(t, dir, files()...), Err: &errs, Logger: testLogger(&bytes.Buffer{}),
			NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Run(context.Background()); !errors.Is(err, ErrFailed) {
			t.Fatalf("Run: %v, want ErrFailed", err)
		}
		want := "error: vault homelab-kv.vault.azure.net, secret web-cert, files tls.key, tls.crt, both.pem: the PKCS#12 bundle is protected by a password. " +
			"Fix: import the certificate into Key Vault without a password (Key Vault keeps its own PFX password-less)\n"
		if diff := cmp.Diff(want, errs.String()); diff != "" {
			t.Errorf("stderr (-want +got):\n%s", diff)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%d entries written, want none", len(entries))
		}
	})
}
