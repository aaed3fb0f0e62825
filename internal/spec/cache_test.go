package spec

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/testkit/certtest"
)

func TestValidateCacheURL(t *testing.T) {
	for _, tt := range []struct{ in, wantErr string }{
		{"https://kvinject-cache.kvinject-system.svc", ""},
		{"https://kvinject-cache.kvinject-system.svc:8443", ""},
		{"https://127.0.0.1:9443/", ""},
		{"https://[::1]:9443", ""},
		{"http://kvinject-cache.kvinject-system.svc", "must be an https:// URL with a host"},
		{"https://", "must be an https:// URL with a host"},
		{"kvinject-cache", "must be an https:// URL with a host"},
		{"https://u:p@cache", "no user, path, query or fragment"},
		{"https://cache/v1/secrets", "no user, path, query or fragment"},
		{"https://cache?x=1", "no user, path, query or fragment"},
		{"https://cache#x", "no user, path, query or fragment"},
		{"https://cache\x7f", "is not a URL"},
	} {
		err := ValidateCacheURL(tt.in)
		if got := errString(err); !strings.Contains(got, tt.wantErr) || (tt.wantErr == "") != (err == nil) {
			t.Errorf("ValidateCacheURL(%q) = %q, want %q", tt.in, got, tt.wantErr)
		}
	}
}

func TestParseCacheCA(t *testing.T) {
	chain, err := certtest.NewChain(certtest.EC, "cache")
	if err != nil {
		t.Fatal(err)
	}
	root := string(certtest.CertsPEM(chain.Root.Cert))
	both := string(certtest.CertsPEM(chain.Root.Cert, chain.Intermediate.Cert))
	for _, tt := range []struct {
		name, in string
		want     int
		wantErr  string
	}{
		{"one", root, 1, ""},
		{"two, blank lines around", "\n" + both + "\n\n", 2, ""},
		{"empty", "", 0, "holds no certificate"},
		{"a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0, `holds a "PRIVATE KEY" block`},
		{"trailing text", root + "junk", 0, "holds text that is not PEM"},
		{"not DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0, "the CA bundle's certificate 1"},
		{"too large", strings.Repeat(root, MaxCacheCABytes/len(root)+1), 0, "bytes, over"},
	} {
		certs, err := ParseCacheCA([]byte(tt.in))
		if got := errString(err); !strings.Contains(got, tt.wantErr) || (tt.wantErr == "") != (err == nil) {
			t.Errorf("%s: error %q, want %q", tt.name, got, tt.wantErr)
		}
		if len(certs) != tt.want {
			t.Errorf("%s: %d certificates, want %d", tt.name, len(certs), tt.want)
		}
	}
}

func TestDecodeCache(t *testing.T) {
	chain, err := certtest.NewChain(certtest.EC, "cache")
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{
		Version: Version, MountPath: DefaultMountPath,
		Files: []File{{Name: "x", Mode: "0400", Secret: &Ref{Vault: homelab, Name: "a"}}},
		Cache: &Cache{URL: "https://kvinject-cache.kvinject-system.svc", CA: string(certtest.CertsPEM(chain.Root.Cert)), Required: true},
	}
	enc, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode([]byte(enc))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&s, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		cache   Cache
		wantErr string
	}{
		{Cache{URL: "http://cache", CA: s.Cache.CA}, "cache url: \"http://cache\" must be an https:// URL"},
		{Cache{URL: "https://cache", CA: ""}, "cache ca: the CA bundle holds no certificate"},
	} {
		bad := s
		bad.Cache = &tt.cache
		enc, err := bad.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode([]byte(enc)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Decode(cache %+v) = %v, want %q", tt.cache, err, tt.wantErr)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
