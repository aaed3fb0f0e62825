package credprovider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The plugin API the kubelet speaks, credentialprovider.kubelet.k8s.io/v1
// (k8s.io/kubelet/pkg/apis/credentialprovider/v1).
const (
	APIVersion   = "credentialprovider.kubelet.k8s.io/v1"
	KindRequest  = "CredentialProviderRequest"
	KindResponse = "CredentialProviderResponse"
)

// Cache key types of a Response: the kubelet caches the answer per image
// (the image without tag or digest), per registry (host and port) or for
// every image the provider matches.
const (
	CacheKeyImage    = "Image"
	CacheKeyRegistry = "Registry"
	CacheKeyGlobal   = "Global"
)

// MaxRequestBytes bounds what is read from stdin: an image name, a token of
// a few kilobytes and the annotations the kubelet's config selects.
const MaxRequestBytes = 512 << 10

// Request is the kubelet's CredentialProviderRequest. It holds the token:
// String and GoString leave it out, so that no format verb prints it.
type Request struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Image is the image being pulled, without tag or digest as the
	// kubelet sends it (registry.example.com:5000/team/app).
	Image string `json:"image"`
	// ServiceAccountToken is the pod's ServiceAccount token, for the
	// audience of the kubelet's tokenAttributes.
	ServiceAccountToken string `json:"serviceAccountToken,omitempty"`
	// ServiceAccountAnnotations are the ServiceAccount's annotations whose
	// keys the kubelet's tokenAttributes name.
	ServiceAccountAnnotations map[string]string `json:"serviceAccountAnnotations,omitempty"`
}

// String names the request without its token.
func (r Request) String() string {
	return fmt.Sprintf("%s for image %q (token: %d bytes)", KindRequest, r.Image, len(r.ServiceAccountToken))
}

// GoString is String: %#v must not print the token either.
func (r Request) GoString() string { return r.String() }

// Response is the CredentialProviderResponse written to stdout.
type Response struct {
	APIVersion   string `json:"apiVersion"`
	Kind         string `json:"kind"`
	CacheKeyType string `json:"cacheKeyType"`
	// CacheDuration nil means the config's defaultCacheDuration; zero
	// means not cached at all.
	CacheDuration *Duration `json:"cacheDuration,omitempty"`
	// Auth maps image patterns (host[:port][/path], '*' globs in host
	// labels) to the credential for the images they match.
	Auth map[string]AuthConfig `json:"auth,omitempty"`
}

// AuthConfig is a registry credential.
type AuthConfig struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// String leaves the password out.
func (a AuthConfig) String() string {
	return fmt.Sprintf("user %q, password of %d bytes", a.Username, len(a.Password))
}

// GoString is String.
func (a AuthConfig) GoString() string { return a.String() }

// Duration is metav1.Duration on the wire: a Go duration string ("5m0s").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("a duration must be a string like \"5m0s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// ErrRequest marks a request the plugin cannot read.
var ErrRequest = errors.New("bad " + KindRequest)

// DecodeRequest reads one request of at most MaxRequestBytes. Errors never
// quote the input: it holds a token.
func DecodeRequest(r io.Reader) (Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxRequestBytes+1))
	if err != nil {
		return Request{}, fmt.Errorf("%w: reading stdin: %w", ErrRequest, err)
	}
	if len(data) > MaxRequestBytes {
		return Request{}, fmt.Errorf("%w: more than %d bytes on stdin", ErrRequest, MaxRequestBytes)
	}
	var req Request
	// Unknown fields are accepted: a newer kubelet may send more.
	if err := json.Unmarshal(data, &req); err != nil {
		return Request{}, fmt.Errorf("%w: stdin is not a JSON object of %s fields (%d bytes)", ErrRequest, KindRequest, len(data))
	}
	if req.APIVersion != APIVersion || req.Kind != KindRequest {
		return Request{}, fmt.Errorf("%w: got apiVersion %s kind %s, want %s %s: set apiVersion: %s for this provider in the kubelet's CredentialProviderConfig",
			ErrRequest, known(req.APIVersion, knownAPIVersions), known(req.Kind, knownKinds), APIVersion, KindRequest, APIVersion)
	}
	if req.Image == "" {
		return Request{}, fmt.Errorf("%w: no image", ErrRequest)
	}
	return req, nil
}

// The versions and kinds of the plugin API, the only field values an error
// quotes: anything else in a request could be a misplaced token.
var (
	knownAPIVersions = []string{"credentialprovider.kubelet.k8s.io/v1alpha1", "credentialprovider.kubelet.k8s.io/v1beta1", APIVersion}
	knownKinds       = []string{KindRequest, KindResponse}
)

func known(v string, values []string) string {
	for _, k := range values {
		if v == k {
			return fmt.Sprintf("%q", v)
		}
	}
	if v == "" {
		return "none"
	}
	return fmt.Sprintf("of %d bytes, unknown", len(v))
}

// Encode writes the response as the kubelet reads it: one JSON object of
// the same apiVersion as the request, with no field the kubelet's strict
// decoder would refuse.
func (r Response) Encode(w io.Writer) error {
	r.APIVersion, r.Kind = APIVersion, KindResponse
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("encode %s: %w", KindResponse, err)
	}
	_, err := w.Write(b.Bytes())
	return err
}
