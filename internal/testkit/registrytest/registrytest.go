// Package registrytest runs a private container registry for tests:
// go-containerregistry's in-memory registry behind TLS (httptest, on
// loopback) and HTTP basic auth, with helpers to push images and indexes
// and to hand clients the credentials and the CA the way users have them.
// Only tests import it.
package registrytest

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kvinject/kvinject/internal/testkit/certtest"
)

// Registry is a running test registry.
type Registry struct {
	// Host is host:port on 127.0.0.1.
	Host string
	// User and Password are the only credentials it accepts.
	User, Password string
	// CAFile is a PEM file of the certificate it serves, the CA to trust.
	CAFile string

	srv       *httptest.Server
	transport *http.Transport
}

// New starts a registry that the test's cleanup stops.
func New(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{User: "puller", Password: "s3cr3t-" + strings.Repeat("x", 8)}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	wantUser, wantPass := sha256.Sum256([]byte(r.User)), sha256.Sum256([]byte(r.Password))
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		if !ok || subtle.ConstantTimeCompare(gotUser[:], wantUser[:])&subtle.ConstantTimeCompare(gotPass[:], wantPass[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		reg.ServeHTTP(w, req)
	}))
	// A CA of its own, so that one registry's CA is unknown to another's.
	chain, err := certtest.NewChain(certtest.EC, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{
		Certificate: [][]byte{chain.Leaf.Cert.Raw, chain.Intermediate.Cert.Raw}, PrivateKey: chain.Leaf.Key, Leaf: chain.Leaf.Cert}}}
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // clients refusing its CA, on purpose
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	r.Host = strings.TrimPrefix(r.srv.URL, "https://")
	r.CAFile = filepath.Join(t.TempDir(), "registry-ca.pem")
	if err := os.WriteFile(r.CAFile, certtest.CertsPEM(chain.Root.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(chain.Root.Cert)
	r.transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(r.transport.CloseIdleConnections)
	return r
}

// Keychain gives the registry's credentials for its host.
func (r *Registry) Keychain() authn.Keychain {
	return staticKeychain{host: r.Host, auth: &authn.Basic{Username: r.User, Password: r.Password}}
}

type staticKeychain struct {
	host string
	auth authn.Authenticator
}

func (k staticKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if res.RegistryStr() == k.host {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

// DockerConfig writes a docker config.json holding user:password for the
// registry into a new directory, for DOCKER_CONFIG, and returns the
// directory.
func (r *Registry) DockerConfig(t testing.TB, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{r.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Image is an empty image with cfg as its config, for platform p.
func Image(t testing.TB, p v1.Platform, cfg v1.Config) v1.Image {
	t.Helper()
	cf, err := empty.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.Config = p.OS, p.Architecture, p.Variant, cfg
	img, err := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1), cf)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// Entry is one image of an index, for its platform.
type Entry struct {
	Platform v1.Platform
	Image    v1.Image
}

// Index is an OCI image index of the entries, in their order.
func Index(entries ...Entry) v1.ImageIndex {
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, e := range entries {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: e.Image, Descriptor: v1.Descriptor{Platform: &e.Platform}})
	}
	return idx
}

// Push writes img (a v1.Image or a v1.ImageIndex) at repo:tag and returns
// its full reference.
func (r *Registry) Push(t testing.TB, repoTag string, img any) string {
	t.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuthFromKeychain(r.Keychain()), remote.WithTransport(r.transport)}
	switch img := img.(type) {
	case v1.Image:
		err = remote.Write(ref, img, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, img, opts...)
	default:
		t.Fatalf("push %T: not an image or an index", img)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}
