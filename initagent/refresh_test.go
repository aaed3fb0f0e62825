package initagent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

// rotatingVault is a SecretGetter whose secrets get new versions, and that
// fails on demand, as Key Vault does during an outage.
type rotatingVault struct {
	mu       sync.Mutex
	values   map[string]string
	types    map[string]string // content types, by name
	versions map[string]int
	calls    map[string]int
	fail     error
}

func (v *rotatingVault) GetSecret(_ context.Context, name, version string) (keyvault.Secret, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls[name]++
	if v.fail != nil {
		return keyvault.Secret{}, v.fail
	}
	val, ok := v.values[name]
	if !ok {
		return keyvault.Secret{}, &azcore.ResponseError{StatusCode: 404, ErrorCode: "SecretNotFound"}
	}
	if version == "" {
		version = fmt.Sprintf("%032x", v.versions[name])
	}
	return keyvault.Secret{Value: val, Version: version, ContentType: v.types[name]}, nil
}

func (v *rotatingVault) set(name, value string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.values[name] = value
	v.versions[name]++
}

func (v *rotatingVault) setFail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fail = err
}

func (v *rotatingVault) callsOf(name string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls[name]
}

// TestRefresh runs the refresh loop on a short interval: a new version is
// written, all files switching together; nothing changes means no write;
// a pinned secret is read once; an outage keeps the files and is said once,
// its end once; cancelling stops the loop at once without writing.
func TestRefresh(t *testing.T) {
	dir := t.TempDir()
	vault := &rotatingVault{values: map[string]string{}, versions: map[string]int{}, calls: map[string]int{}}
	vault.set("app-pgsql", `{"username":"superman","password":"louiselane"}`)
	vault.set("pinned", "p1")
	s := mustSpec(t, dir,
		secretFile("username", "0400", "app-pgsql#username"),
		secretFile("password", "0400", "app-pgsql#password"),
		secretFile("pinned", "0400", "pinned/00000000000000000000000000000001"),
	)
	var logs, errs syncbuf.Buffer
	a, err := New(Options{Spec: s, Err: &errs, Logger: testLogger(&logs),
		NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	// The agent writes first, as kvinject-agent does.
	if err := a.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v\n%s", err, errs.String())
	}
	dataDir := func() string {
		target, err := os.Readlink(filepath.Join(dir, "..data"))
		if err != nil {
			t.Fatal(err)
		}
		return target
	}
	first := dataDir()

	const interval = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Refresh(ctx, interval) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * interval)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v\nlog:\n%s\nstderr:\n%s", what, 10*interval, logs.String(), errs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}

	// Unchanged versions: read again, never written.
	waitFor("a second read", func() bool { return vault.callsOf("app-pgsql") >= 3 })
	if got := dataDir(); got != first {
		t.Errorf("files rewritten without a new version: ..data -> %s, was %s", got, first)
	}

	// A rotation reaches both files in one switch.
	vault.set("app-pgsql", `{"username":"lex","password":"luthor"}`)
	waitFor("the new version in the files", func() bool { return read("username") == "lex" })
	if read("password") != "luthor" {
		t.Errorf("password not switched with username")
	}
	if n := vault.callsOf("pinned"); n != 2 {
		t.Errorf("the pinned secret was read %d times, want twice: by the agent, and once by the refresh", n)
	}

	// An outage: the files stay, the problem is said once, the recovery once.
	before := dataDir()
	vault.setFail(&azcore.ResponseError{StatusCode: 503, ErrorCode: "ServiceUnavailable"})
	calls := vault.callsOf("app-pgsql")
	waitFor("three failed refreshes", func() bool { return vault.callsOf("app-pgsql") >= calls+3 })
	if got := dataDir(); got != before || read("username") != "lex" {
		t.Errorf("an outage changed the files")
	}
	if n := strings.Count(errs.String(), "error: vault homelab-kv.vault.azure.net, secret app-pgsql: Key Vault failed (503 ServiceUnavailable)"); n != 1 {
		t.Errorf("the outage was said %d times, want once:\n%s", n, errs.String())
	}
	vault.setFail(nil)
	waitFor("the recovery", func() bool { return strings.Contains(logs.String(), `"msg":"refresh recovered"`) })

	// A deleted secret: the last good set stays, and it is reported.
	vault.mu.Lock()
	delete(vault.values, "app-pgsql")
	vault.mu.Unlock()
	waitFor("the deletion reported", func() bool { return strings.Contains(errs.String(), `no secret named "app-pgsql"`) })
	if read("username") != "lex" {
		t.Errorf("a deleted secret changed the files")
	}

	// Stopping is immediate and writes nothing.
	last := dataDir()
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Refresh = %v, want nil", err)
		}
	case <-time.After(interval):
		t.Fatal("Refresh did not stop at once")
	}
	if took := time.Since(t0); took > 200*time.Millisecond {
		t.Errorf("stopping took %v", took)
	}
	if dataDir() != last {
		t.Error("stopping changed the files")
	}
	assertNoValues(t, logs.String()+errs.String(), "superman", "louiselane", "lex", "luthor")
	if n := strings.Count(logs.String(), `"msg":"wrote files"`); n != 2 { // the agent's, then the rotation's
		t.Errorf("%d writes logged, want 2:\n%s", n, logs.String())
	}
	if n := vault.callsOf("pinned"); n != 2 {
		t.Errorf("the pinned secret was read %d times in all, want 2", n)
	}
}

// TestRefreshCertificate: a renewed certificate is a new version of its
// secret, and its key and chain files switch together.
func TestRefreshCertificate(t *testing.T) {
	f := fx.get(t)
	pfxOf := func(c *certtest.Chain) string {
		return certtest.Must(t)(certtest.PFX(pkcs12.Modern2023, "", c.Leaf.Key, c.Leaf.Cert, c.Intermediate.Cert))
	}
	dir := t.TempDir()
	vault := &rotatingVault{values: map[string]string{}, versions: map[string]int{}, calls: map[string]int{},
		types: map[string]string{"web-cert": spec.ContentTypePKCS12}}
	vault.set("web-cert", pfxOf(f.rsa))
	s := mustSpec(t, dir, secretFile("tls.key", "0400", "web-cert#key"), secretFile("tls.crt", "0444", "web-cert#fullchain"))
	var logs, errs syncbuf.Buffer
	a, err := New(Options{Spec: s, Err: &errs, Logger: testLogger(&logs),
		NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v\n%s", err, errs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Refresh(ctx, time.Second) }()

	vault.set("web-cert", pfxOf(f.ec)) // renewed, with a new key
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "tls.crt"))
		if certs := certtest.ParseCerts(t, b); len(certs) > 0 && certs[0].Equal(f.ec.Leaf.Cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate did not arrive\n%s", errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The reader sees the new pair through one ..data switch.
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		t.Fatal("tls.key is not PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(f.ec.Leaf.Cert.PublicKey) {
		t.Error("tls.key is not the renewed certificate's key")
	}
}
