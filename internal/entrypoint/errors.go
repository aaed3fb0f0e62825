package entrypoint

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Kind says what went wrong with an image, so that a command can add the
// flag that fixes it.
type Kind int

const (
	KindOther Kind = iota
	// KindReference: not an image reference, or no container name.
	KindReference
	// KindUnreachable: no connection to the registry, or no answer in time.
	KindUnreachable
	// KindUnknownAuthority: the registry's certificate is not signed by a
	// trusted CA.
	KindUnknownAuthority
	// KindUnauthorized: the registry refused the credentials, or asked for
	// some and none were found.
	KindUnauthorized
	// KindNotFound: no such repository, tag or digest.
	KindNotFound
	// KindPlatform: the image has no manifest for the platform.
	KindPlatform
	// KindNoProgram: the image has neither ENTRYPOINT nor CMD.
	KindNoProgram
	// KindTooLarge: a response exceeded Options.MaxResponseBytes.
	KindTooLarge
)

// ImageError is the problem with one image.
type ImageError struct {
	Image string
	Kind  Kind
	// Platforms are the platforms an index offers (KindPlatform).
	Platforms []string
	Err       error
}

func (e *ImageError) Error() string { return "image " + e.Image + ": " + e.Err.Error() }
func (e *ImageError) Unwrap() error { return e.Err }

// errPlainHTTP refuses a registry's plain HTTP fallback: credentials and
// the program the wrapper runs come over TLS only.
var errPlainHTTP = errors.New("plain HTTP refused")

// errTooLarge is a response body over the limit.
var errTooLarge = errors.New("response too large")

// classify turns an error of go-containerregistry into an ImageError that
// says what to fix. anonymous: no credentials were found for the registry.
func classify(image, registry string, anonymous bool, err error) *ImageError {
	ie := &ImageError{Image: image, Err: err}
	var unknownCA x509.UnknownAuthorityError
	var certErr *x509.CertificateInvalidError
	var hostErr x509.HostnameError
	var terr *transport.Error
	var netErr net.Error
	switch {
	case errors.As(err, &unknownCA):
		ie.Kind = KindUnknownAuthority
		ie.Err = fmt.Errorf("the certificate of registry %s is signed by an authority not trusted here: trust its CA (%w)", registry, unknownCA)
	case errors.As(err, &certErr), errors.As(err, &hostErr):
		ie.Kind = KindUnknownAuthority
		ie.Err = fmt.Errorf("the certificate of registry %s is not valid for it: %w", registry, err)
	case errors.Is(err, errTooLarge):
		ie.Kind = KindTooLarge
		ie.Err = fmt.Errorf("registry %s sent a response over the size limit: %w", registry, err)
	case errors.As(err, &terr):
		ie.Kind, ie.Err = classifyStatus(registry, anonymous, terr)
	case errors.Is(err, context.DeadlineExceeded):
		ie.Kind = KindUnreachable
		ie.Err = fmt.Errorf("registry %s did not answer in time: %w", registry, err)
	case errors.As(err, &netErr):
		ie.Kind = KindUnreachable
		ie.Err = fmt.Errorf("cannot reach registry %s: check the host name, the port and the network (%w)", registry, err)
	}
	return ie
}

func classifyStatus(registry string, anonymous bool, terr *transport.Error) (Kind, error) {
	codes := map[transport.ErrorCode]bool{}
	for _, d := range terr.Errors {
		codes[d.Code] = true
	}
	switch {
	case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden || codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
		if anonymous {
			return KindUnauthorized, fmt.Errorf("registry %s wants credentials and none were found for it: log in (docker login %s, or podman login) so that your docker or podman config holds them (%w)", registry, registry, terr)
		}
		return KindUnauthorized, fmt.Errorf("registry %s refused the credentials found for it in your docker or podman config: log in again (docker login %s) (%w)", registry, registry, terr)
	case terr.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] || codes[transport.NameUnknownErrorCode]:
		return KindNotFound, fmt.Errorf("no such repository, tag or digest in registry %s: check the image reference (%w)", registry, terr)
	}
	return KindOther, terr
}

// noPlatformError names the platforms an index offers.
func noPlatformError(image string, want Platform, available []string) *ImageError {
	list := "none"
	if len(available) > 0 {
		list = strings.Join(available, ", ")
	}
	return &ImageError{Image: image, Kind: KindPlatform, Platforms: available,
		Err: fmt.Errorf("no image for platform %s; the image offers: %s: choose one of them", want, list)}
}
