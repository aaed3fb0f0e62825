package webhook

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
)

// testCacheCAPEM is testdata/cache-ca.pem as the spec carries it: the
// certificate alone.
func testCacheCAPEM(t testing.TB) string {
	t.Helper()
	block, _ := pem.Decode(testCacheCA(t))
	if block == nil {
		t.Fatal("testdata/cache-ca.pem holds no PEM block")
	}
	return string(pem.EncodeToMemory(block))
}

// TestParseCache: each value of kvinject.io/cache, on a cluster with and
// without a cache, with and without --cache-by-default.
func TestParseCache(t *testing.T) {
	ca := testCacheCAPEM(t)
	const warning = `kvinject.io/cache: "true", but this cluster runs no kvinject cache (the webhook has no --cache-url): the pod reads from Azure directly`
	noCache := func(o *Options) { o.CacheURL, o.CacheCA = "", nil }
	byDefault := func(o *Options) { o.CacheByDefault = true }
	tests := []struct {
		name        string
		value       *string // nil: no annotation
		opts        func(*Options)
		want        *spec.Cache
		wantWarning string
		wantDenial  []string
	}{
		{name: "absent", want: nil},
		{name: "absent, by default", opts: byDefault, want: &spec.Cache{URL: testCacheURL, CA: ca}},
		{name: "true", value: ptr.To(spec.CacheOn), want: &spec.Cache{URL: testCacheURL, CA: ca}},
		{name: "required", value: ptr.To(spec.CacheRequired), want: &spec.Cache{URL: testCacheURL, CA: ca, Required: true}},
		{name: "false", value: ptr.To(spec.CacheOff), want: nil},
		{name: "false, by default", value: ptr.To(spec.CacheOff), opts: byDefault, want: nil},
		{name: "required, by default", value: ptr.To(spec.CacheRequired), opts: byDefault, want: &spec.Cache{URL: testCacheURL, CA: ca, Required: true}},
		{name: "no cache: absent", opts: noCache, want: nil},
		{name: "no cache: true", value: ptr.To(spec.CacheOn), opts: noCache, want: nil, wantWarning: warning},
		{name: "no cache: false", value: ptr.To(spec.CacheOff), opts: noCache, want: nil},
		{name: "no cache: required", value: ptr.To(spec.CacheRequired), opts: noCache,
			wantDenial: []string{`kvinject.io/cache: "required" needs the cluster cache, and this cluster runs none (the webhook has no --cache-url): use "true", which reads from Azure directly where no cache runs, or remove the annotation`}},
		{name: "empty", value: ptr.To(""), wantDenial: []string{`kvinject.io/cache: "" must be "true", "required" or "false"`}},
		{name: "yes", value: ptr.To("yes"), wantDenial: []string{`kvinject.io/cache: "yes" must be "true", "required" or "false"`}},
		{name: "spaces", value: ptr.To(" true"), opts: noCache, wantDenial: []string{`kvinject.io/cache: " true" must be "true", "required" or "false"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t)
			if tt.opts != nil {
				tt.opts(o)
				o.Complete()
				if err := o.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			ann := map[string]string{}
			if tt.value != nil {
				ann[spec.AnnotationCache] = *tt.value
			}
			d := &Denial{}
			got, warning := parseCache(ann, o, d)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("cache (-want +got):\n%s", diff)
			}
			if warning != tt.wantWarning {
				t.Errorf("warning %q, want %q", warning, tt.wantWarning)
			}
			if diff := cmp.Diff(tt.wantDenial, d.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}

			// Admit warns the same of an admitted pod; Mutate puts the
			// cache in the spec.
			pod := podWith(map[string]string{"kvinject.io/secret-db": "db"})
			for k, v := range ann {
				pod.Annotations[k] = v
			}
			var wantWarnings []string
			if tt.wantWarning != "" {
				wantWarnings = []string{tt.wantWarning}
			}
			adm, _ := Admit(pod, testSA("ns", "app"), o)
			if diff := cmp.Diff(wantWarnings, adm.Warnings); diff != "" {
				t.Errorf("Admit's warnings (-want +got):\n%s", diff)
			}
			if err := Mutate(pod, testSA("ns", "app"), o); err != nil {
				if tt.wantDenial == nil {
					t.Fatalf("Mutate: %v", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, agentSpec(t, pod.Spec.InitContainers[0]).Cache); diff != "" {
				t.Errorf("the agent's spec's cache (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCacheOptions: --cache-url, --cache-ca-file and --cache-by-default
// are checked together, and the CA the spec carries is its certificates
// alone.
func TestCacheOptions(t *testing.T) {
	ca := testCacheCA(t)
	caPEM := testCacheCAPEM(t)
	tests := []struct {
		name      string
		url       string
		ca        []byte
		byDefault bool
		wantURL   string
		wantCA    string
		wantErr   string
	}{
		{name: "no cache"},
		{name: "a cache", url: testCacheURL, ca: ca, wantURL: testCacheURL, wantCA: caPEM},
		{name: "by default", url: testCacheURL, ca: ca, byDefault: true, wantURL: testCacheURL, wantCA: caPEM},
		{name: "a port and a slash", url: "https://10.96.0.12:8443/", ca: ca, wantURL: "https://10.96.0.12:8443", wantCA: caPEM},
		{name: "two certificates", url: testCacheURL, ca: []byte(caPEM + "\n" + caPEM), wantURL: testCacheURL, wantCA: caPEM + caPEM},
		{name: "http", url: "http://kvinject-cache.kvinject-system.svc", ca: ca,
			wantErr: `--cache-url: "http://kvinject-cache.kvinject-system.svc" must be an https:// URL with a host (like https://kvinject-cache.kvinject-system.svc.cluster.local.)`},
		{name: "not fully qualified", url: "https://kvinject-cache.kvinject-system.svc", ca: ca,
			wantErr: `--cache-url: "https://kvinject-cache.kvinject-system.svc" is not fully qualified: a pod would look kvinject-cache.kvinject-system.svc up through its DNS search path; name the host with the cluster domain and a trailing dot (like https://kvinject-cache.kvinject-system.svc.cluster.local.)`},
		{name: "a path", url: testCacheURL + "/v1", ca: ca,
			wantErr: `--cache-url: "https://kvinject-cache.kvinject-system.svc.cluster.local./v1" must be just https://HOST[:PORT]: no user, path, query or fragment`},
		{name: "no CA", url: testCacheURL,
			wantErr: "--cache-url needs --cache-ca-file: the agent trusts the cache's certificate through that CA bundle alone"},
		{name: "a CA and no URL", ca: ca, wantErr: "--cache-ca-file needs --cache-url: it is the CA of the cache there"},
		{name: "by default and no URL", byDefault: true, wantErr: "--cache-by-default needs --cache-url: there is no cache to use"},
		{name: "a key", url: testCacheURL, ca: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
			wantErr: `--cache-ca-file: the CA bundle holds a "PRIVATE KEY" block: want only CERTIFICATE blocks`},
		{name: "text after the certificate", url: testCacheURL, ca: []byte(caPEM + "junk\n"),
			wantErr: "--cache-ca-file: the CA bundle holds text that is not PEM"},
		{name: "too large as 64-character lines", url: testCacheURL, ca: oneLineCertNearLimit(t),
			wantErr: "--cache-ca-file: as PEM of 64-character lines, the CA bundle is "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.AgentImage = "kvinject:test"
			o.CacheURL, o.CacheCA, o.CacheByDefault = tt.url, tt.ca, tt.byDefault
			o.Complete()
			err := o.Validate()
			if got := errString(err); tt.wantErr == "" && err != nil || !strings.HasPrefix(got, tt.wantErr) {
				t.Fatalf("Validate = %q, want %q", got, tt.wantErr)
			}
			if err != nil {
				return
			}
			if o.cacheURL != tt.wantURL {
				t.Errorf("URL %q, want %q", o.cacheURL, tt.wantURL)
			}
			if diff := cmp.Diff(tt.wantCA, o.cacheCA); diff != "" {
				t.Errorf("CA (-want +got):\n%s", diff)
			}
		})
	}
}

// oneLineCertNearLimit is a certificate PEM block whose base64 is one line,
// within spec.MaxCacheCABytes, and over it when written as 64-character
// lines: the bound holds for what the spec carries.
func oneLineCertNearLimit(t *testing.T) []byte {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Ed25519 signatures are of one size: the certificate grows with the
	// extension alone.
	for n := 11000; n < 13000; n++ {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvinject-cache-ca"},
			NotBefore: time.Unix(0, 0), NotAfter: time.Unix(0, 0).Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, n)}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		oneLine := "-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END CERTIFICATE-----\n"
		lines := len(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		if len(oneLine) <= spec.MaxCacheCABytes && lines > spec.MaxCacheCABytes {
			return []byte(oneLine)
		}
	}
	t.Fatal("no extension size gives a certificate near the limit")
	return nil
}

// TestWithCacheCA: a new bundle gives a new copy of the options; the
// options it was made from, and a bundle that is not valid, change nothing.
func TestWithCacheCA(t *testing.T) {
	o := testOptions(t)
	before := o.cacheCA
	ca := testCacheCAPEM(t)
	next, err := o.WithCacheCA([]byte(ca + ca))
	if err != nil {
		t.Fatal(err)
	}
	if next == o || o.cacheCA != before || next.cacheCA != ca+ca || string(next.CacheCA) != ca+ca {
		t.Errorf("WithCacheCA changed the options or did not copy them: before %d bytes, after %d, copy %d", len(before), len(o.cacheCA), len(next.cacheCA))
	}
	if next.templates != o.templates || next.cacheURL != o.cacheURL {
		t.Errorf("the copy does not keep what it was made from")
	}
	if _, err := o.WithCacheCA([]byte("junk")); errString(err) != "--cache-ca-file: the CA bundle holds text that is not PEM" {
		t.Errorf("junk: %v", err)
	}
	if o.cacheCA != before {
		t.Errorf("a bad bundle changed the options")
	}
	none := DefaultOptions()
	none.AgentImage = "kvinject:test"
	none.Complete()
	if err := none.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := none.WithCacheCA([]byte(ca)); errString(err) != "--cache-ca-file needs --cache-url: it is the CA of the cache there" {
		t.Errorf("without a cache: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
