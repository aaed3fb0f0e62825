package entrypoint

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Options say how to reach registries. The zero value, completed, reads
// linux/amd64 with the user's docker or podman credentials and the
// system's CAs.
type Options struct {
	// Platform is os/arch[/variant]: which image of a multi-platform index
	// to read. Default DefaultPlatform.
	Platform string
	// CAFiles are PEM files of CAs trusted beside the system's (which Go
	// reads from SSL_CERT_FILE and SSL_CERT_DIR when set).
	CAFiles []string
	// Timeout bounds the reading of one image, retries included.
	Timeout time.Duration
	// Concurrency bounds the images read at once.
	Concurrency int
	// MaxResponseBytes bounds every registry response body.
	MaxResponseBytes int64
	// Keychain finds the credentials for a registry. Default
	// authn.DefaultKeychain: ~/.docker/config.json or $DOCKER_CONFIG (with
	// their credential helpers), else $REGISTRY_AUTH_FILE or podman's
	// containers/auth.json.
	Keychain authn.Keychain
	// UserAgent is sent to registries.
	UserAgent string
}

// Defaults of Options.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultConcurrency      = 4
	DefaultMaxResponseBytes = 8 << 20
)

// caFiles is a repeatable flag.
type caFiles []string

func (c *caFiles) String() string     { return strings.Join(*c, ",") }
func (c *caFiles) Set(v string) error { *c = append(*c, v); return nil }

// AddFlags binds the options a user sets: --platform, --ca-file, --timeout.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Platform, "platform", DefaultPlatform, "os/arch[/variant]: the image of a multi-platform index to read")
	fs.Var((*caFiles)(&o.CAFiles), "ca-file", "PEM file of CAs to trust for registries, beside the system's (repeatable)")
	fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "time limit for reading one image")
}

// Complete fills in the defaults.
func (o *Options) Complete() {
	if o.Platform == "" {
		o.Platform = DefaultPlatform
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.UserAgent == "" {
		o.UserAgent = "kvinject"
	}
}

// Validate returns every problem of completed options.
func (o *Options) Validate() error {
	var errs []error
	if _, err := ParsePlatform(o.Platform); err != nil {
		errs = append(errs, err)
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s: must be positive", o.Timeout))
	}
	if o.Concurrency < 1 || o.Concurrency > 64 {
		errs = append(errs, fmt.Errorf("concurrency %d: must be 1 to 64", o.Concurrency))
	}
	if o.MaxResponseBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("response limit %d bytes: must be at least 1 KiB", o.MaxResponseBytes))
	}
	return errors.Join(errs...)
}
