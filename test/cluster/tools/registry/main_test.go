package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	testUser = "puller"
	testPass = "s3cret-Pa55-do-not-log"
)

// syncBuffer is a log sink that the server's goroutines and the test may use concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer runs serve's server on a free loopback port with a fresh CA and returns its host:port,
// the CA (PEM) and the log sink.
func startServer(t *testing.T) (string, []byte, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := makePKI(t)
	write := func(n string, b []byte) string {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, keyFile := write("tls.crt", certPEM), write("tls.key", keyPEM)
	authFile := write("auth", []byte(testUser+":"+testPass+"\n"))

	logs := &syncBuffer{}
	srv, ln, err := newServer("127.0.0.1:0", certFile, keyFile, authFile, log.New(logs, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), caPEM, logs
}

// makePKI returns a CA certificate and a server certificate for 127.0.0.1 signed by it, with its key.
func makePKI(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func client(t *testing.T, caPEM []byte) *http.Client {
	t.Helper()
	tr, err := caTransport(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestBasicAuthChallenge(t *testing.T) {
	addr, caPEM, logs := startServer(t)
	c := client(t, caPEM)
	for _, tc := range []struct {
		name, user, pass string
		setAuth          bool
		want             int
	}{
		{name: "no credentials", want: http.StatusUnauthorized},
		{name: "wrong password", user: testUser, pass: "wrong", setAuth: true, want: http.StatusUnauthorized},
		{name: "wrong user", user: "other", pass: testPass, setAuth: true, want: http.StatusUnauthorized},
		{name: "password prefix", user: testUser, pass: testPass[:5], setAuth: true, want: http.StatusUnauthorized},
		{name: "right credentials", user: testUser, pass: testPass, setAuth: true, want: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.setAuth {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version %q", got)
			}
			challenge := resp.Header.Get("WWW-Authenticate")
			if tc.want == http.StatusUnauthorized && challenge != `Basic realm="kvinject-registry"` {
				t.Errorf("WWW-Authenticate %q", challenge)
			}
			if tc.want == http.StatusOK && challenge != "" {
				t.Errorf("unexpected WWW-Authenticate %q", challenge)
			}
		})
	}
	out := logs.String()
	for _, want := range []string{"GET /v2/ -> 401 creds=none", "GET /v2/ -> 401 creds=invalid", "GET /v2/ -> 200 creds=valid"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	checkNoSecret(t, out)
}

func TestTLS12Minimum(t *testing.T) {
	addr, caPEM, _ := startServer(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

func TestPushPull(t *testing.T) {
	addr, caPEM, logs := startServer(t)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := addr + "/kvinject/dbreader:e2e"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	if _, err := push(context.Background(), tarPath, ref, testUser, "wrong", caPEM); err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	got, err := push(context.Background(), tarPath, ref, testUser, testPass, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("pushed digest %s, want %s", got, want)
	}

	tr, err := caTransport(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	if _, err := remote.Image(tag, remote.WithTransport(tr)); err == nil {
		t.Fatal("anonymous pull succeeded")
	}
	pulled, err := remote.Image(tag, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: testUser, Password: testPass}))
	if err != nil {
		t.Fatal(err)
	}
	pd, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if pd != want {
		t.Fatalf("pulled digest %s, want %s", pd, want)
	}
	layers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers { // fetch and verify every blob
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
	}

	out := logs.String()
	if !strings.Contains(out, "PUT /v2/kvinject/dbreader/manifests/e2e -> 201 creds=valid") {
		t.Errorf("log lacks the manifest PUT:\n%s", out)
	}
	checkNoSecret(t, out)
}

func checkNoSecret(t *testing.T, out string) {
	t.Helper()
	basic := base64.StdEncoding.EncodeToString([]byte(testUser + ":" + testPass))
	for _, secret := range []string{testPass, basic, "Authorization"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:5000": true, "[::1]:5000": true, "127.0.0.1:0": true,
		":5000": false, "0.0.0.0:5000": false, "[::]:5000": false, "localhost:5000": false,
		"127.0.0.2:5000": false, "10.0.0.1:5000": false, "127.0.0.1": false,
	} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestReadAuthFile(t *testing.T) {
	dir := t.TempDir()
	for content, ok := range map[string]bool{
		"u:p\n": true, "u:p": true, "u:p:q\r\n": true,
		"": false, "u\n": false, ":p\n": false, "u:\n": false, "u:p\nv:q\n": false,
	} {
		f := filepath.Join(dir, "auth")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := readAuthFile(f)
		if (err == nil) != ok {
			t.Errorf("readAuthFile(%q) = %v, want ok=%v", content, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), content) && content != "" {
			t.Errorf("error quotes the file: %v", err)
		}
	}
}
