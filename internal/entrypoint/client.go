package entrypoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Request is one image to read, for one container.
type Request struct {
	// Image is the container's image reference, as in a pod spec.
	Image string
	// Container names the container; "" is the last path element of the
	// image's repository.
	Container string
	// EntrypointOnly gives the image's ENTRYPOINT alone, for a container
	// that has args (they take the place of CMD).
	EntrypointOnly bool
}

// Client reads image configs from registries.
type Client struct {
	o         Options
	platform  Platform
	transport http.RoundTripper
}

// New makes a Client of completed, valid options: it reads the CA files.
func New(o Options) (*Client, error) {
	platform, err := ParsePlatform(o.Platform)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range o.CAFiles {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", f)
		}
	}
	base := remote.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &Client{o: o, platform: platform, transport: &boundedTransport{base: base, max: o.MaxResponseBytes}}, nil
}

// Resolve reads the image of every request, o.Concurrency at a time, and
// returns their annotations in the order of reqs; the error joins an
// *ImageError for each image that failed, whose annotation is left zero
// (Program nil).
func (c *Client) Resolve(ctx context.Context, reqs []Request) ([]Annotation, error) {
	out, errs := c.ResolveEach(ctx, reqs)
	return out, errors.Join(errs...)
}

// ResolveEach is Resolve with each request's error (an *ImageError, or
// nil) beside its annotation.
func (c *Client) ResolveEach(ctx context.Context, reqs []Request) ([]Annotation, []error) {
	out := make([]Annotation, len(reqs))
	errs := make([]error, len(reqs))
	sem := make(chan struct{}, c.o.Concurrency)
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = &ImageError{Image: r.Image, Kind: KindUnreachable, Err: ctx.Err()}
				return
			}
			defer func() { <-sem }()
			a, err := c.resolve(ctx, r)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = a
		})
	}
	wg.Wait()
	return out, errs
}

// maxIndexDepth bounds nested indexes (an index whose entry is an index).
const maxIndexDepth = 2

func (c *Client) resolve(ctx context.Context, r Request) (Annotation, error) {
	a := Annotation{Request: r, Container: r.Container, Platform: c.platform.String()}
	ref, err := name.ParseReference(r.Image)
	if err != nil {
		return a, &ImageError{Image: r.Image, Kind: KindReference, Err: fmt.Errorf("not an image reference: %w", err)}
	}
	if a.Container == "" {
		a.Container = path.Base(ref.Context().RepositoryStr())
	}
	if err := validateContainer(a.Container); err != nil {
		return a, &ImageError{Image: r.Image, Kind: KindReference, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	registry := ref.Context().RegistryStr()
	auth, err := authn.Resolve(ctx, c.o.Keychain, ref.Context())
	if err != nil {
		return a, &ImageError{Image: r.Image, Kind: KindUnauthorized, Err: fmt.Errorf("reading your registry credentials for %s: %w", registry, err)}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(c.transport), remote.WithUserAgent(c.o.UserAgent)}
	img, digest, err := c.image(r.Image, ref, opts)
	if err != nil {
		var ie *ImageError
		if errors.As(err, &ie) {
			return a, ie
		}
		return a, classify(r.Image, registry, auth == authn.Anonymous, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return a, classify(r.Image, registry, auth == authn.Anonymous, fmt.Errorf("image config: %w", err))
	}
	if got := (Platform{OS: cfg.OS, Arch: cfg.Architecture, Variant: cfg.Variant}); cfg.OS != "" && !c.platform.matches(got) {
		return a, noPlatformError(r.Image, c.platform, []string{got.String()})
	}
	a.Digest = digest
	a.Program = slices.Clone(cfg.Config.Entrypoint)
	if a.Program == nil {
		a.Program = []string{}
	}
	if !r.EntrypointOnly {
		a.Program = append(a.Program, cfg.Config.Cmd...)
		if len(a.Program) == 0 {
			return a, &ImageError{Image: r.Image, Kind: KindNoProgram,
				Err: errors.New("the image has neither ENTRYPOINT nor CMD, so the container runs nothing without a command: give it a command")}
		}
	}
	return a, nil
}

// image finds the image of ref (as the user wrote it: image) for the
// platform, following an index.
func (c *Client) image(image string, ref name.Reference, opts []remote.Option) (v1.Image, string, error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, "", err
	}
	switch {
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		return img, desc.Digest.String(), err
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, "", err
		}
		return c.fromIndex(image, idx, 1)
	case desc.MediaType.IsSchema1():
		return nil, "", &ImageError{Image: image, Kind: KindOther,
			Err: errors.New("the registry serves it as a Docker schema 1 manifest, which has no image config: push the image again with a current client")}
	}
	return nil, "", &ImageError{Image: image, Kind: KindOther, Err: fmt.Errorf("manifest of media type %s is not an image or an index", desc.MediaType)}
}

func (c *Client) fromIndex(image string, idx v1.ImageIndex, depth int) (v1.Image, string, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	var available []string
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" { // attestations
			continue
		}
		p := Platform{OS: d.Platform.OS, Arch: d.Platform.Architecture, Variant: d.Platform.Variant}
		available = append(available, p.String())
		if !c.platform.matches(p) {
			continue
		}
		switch {
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			return img, d.Digest.String(), err
		case d.MediaType.IsIndex() && depth < maxIndexDepth:
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, "", err
			}
			return c.fromIndex(image, child, depth+1)
		}
	}
	slices.Sort(available)
	return nil, "", noPlatformError(image, c.platform, slices.Compact(available))
}

// validateContainer checks that name can be a container's and can end an
// annotation key.
func validateContainer(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("container name %q (from the image's repository unless named): %s: name the container", name, errs[0])
	}
	if errs := validation.IsQualifiedName(AnnotationPrefix + name); len(errs) > 0 {
		return fmt.Errorf("container name %q is too long for the annotation %s%s: %s", name, AnnotationPrefix, name, errs[0])
	}
	return nil
}

// boundedTransport refuses plain HTTP and bounds every response body.
type boundedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, errPlainHTTP
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %d bytes, limit %d: %w", req.URL.Path, resp.ContentLength, t.max, errTooLarge)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// limitedBody fails the read past its limit instead of cutting the body
// short silently.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return b.rc.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
