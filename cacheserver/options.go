package cacheserver

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvinject/kvinject/internal/spec"
)

// Defaults of Options.
const (
	DefaultTTL             = time.Hour
	DefaultMaxStale        = 24 * time.Hour
	DefaultMaxEntries      = 10_000
	DefaultMaxBytes        = 64 << 20
	DefaultRatePerSecond   = 5
	DefaultRateBurst       = 100
	DefaultUpstreamTimeout = 30 * time.Second
	// DefaultMaxConcurrentReviews bounds the TokenReviews in flight, so
	// that callers with tokens the API server must check cannot flood it.
	DefaultMaxConcurrentReviews = 16
	// DefaultReviewWait is how long a request waits for a review slot
	// before it is refused with 503, so that an agent goes to Azure
	// directly instead of waiting.
	DefaultReviewWait = 5 * time.Second
	// DefaultMaxAnswerBytesInFlight bounds the answers being written at
	// once, all callers together: a client that reads slowly holds its
	// answer's bytes until WriteTimeout.
	DefaultMaxAnswerBytesInFlight = 32 << 20
	// DefaultWriteTimeout bounds writing one answer.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxRequestsPerNamespace bounds the requests of one namespace's
	// pods being answered at once, so that one namespace cannot take every
	// slot of the answers in flight.
	DefaultMaxRequestsPerNamespace = 32
	// DefaultMaxConcurrentRequests bounds the requests being handled at
	// once, before anyone is authenticated: with the body limit, 256 x 64
	// KiB of bodies at most.
	DefaultMaxConcurrentRequests = 256
	// DefaultReadTimeout bounds reading a request's body.
	DefaultReadTimeout = 10 * time.Second
)

// minAnswerBytesInFlight leaves room for one answer of
// MaxSecretsPerRequest results, each at least an error.
const minAnswerBytesInFlight = 64 << 10

// Options configure the cache. New validates them once.
type Options struct {
	// TTL is how long a value is served without asking Key Vault again,
	// and how long one identity's credential (and so its Entra ID access
	// token) is reused; default DefaultTTL.
	TTL time.Duration
	// MaxStale is how long past its TTL a value is still served while
	// Entra ID or Key Vault is unreachable or failing; default
	// DefaultMaxStale. Negative: never serve a stale value.
	MaxStale time.Duration
	// MaxEntries and MaxBytes cap the cached values; the least recently
	// used go first. Defaults DefaultMaxEntries and DefaultMaxBytes.
	MaxEntries int
	MaxBytes   int64
	// RatePerSecond and RateBurst are each caller's token bucket; a caller
	// is a token subject (one ServiceAccount), so all replicas of a
	// Deployment share one. Defaults DefaultRatePerSecond, DefaultRateBurst.
	RatePerSecond float64
	RateBurst     int
	// UpstreamTimeout bounds one read from Entra ID and Key Vault, retries
	// included; default DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration

	// Cloud gives the authority host, the vault host suffix requests must
	// name and the Key Vault token scope. Zero: the public cloud.
	Cloud spec.Cloud
	// AuthorityHost overrides the cloud's; https.
	AuthorityHost string
	// Proxy and RootCAs replace HTTPS_PROXY/NO_PROXY and the system roots
	// for upstream requests; nil: the environment's (the command reads it).
	Proxy   func(*http.Request) (*url.URL, error)
	RootCAs *x509.CertPool
	// Retry replaces the agent's upstream retries when not nil.
	Retry *policy.RetryOptions

	// Reviewer proves callers (APITokenReviewer in production). Required.
	Reviewer TokenReviewer
	// MaxConcurrentReviews and ReviewWait bound the TokenReviews in flight
	// and how long a request waits for one; defaults
	// DefaultMaxConcurrentReviews and DefaultReviewWait.
	MaxConcurrentReviews int
	// ReviewWait is also how long a request waits for its namespace's slot
	// and for room among the answers in flight.
	ReviewWait time.Duration
	// MaxAnswerBytesInFlight bounds the bytes of the answers being written
	// at once (a request that finds no room within ReviewWait is refused
	// with 503 busy); WriteTimeout bounds writing one answer, so that a
	// client that does not read gives its room back;
	// MaxRequestsPerNamespace bounds the requests of one namespace answered
	// at once (503 namespace-busy). Defaults DefaultMaxAnswerBytesInFlight,
	// DefaultWriteTimeout, DefaultMaxRequestsPerNamespace.
	MaxAnswerBytesInFlight  int64
	WriteTimeout            time.Duration
	MaxRequestsPerNamespace int
	// MaxConcurrentRequests bounds the requests handled at once, taken
	// before the body is read (503 busy at once beyond it); ReadTimeout
	// bounds reading a body (408 slow-body). Defaults
	// DefaultMaxConcurrentRequests, DefaultReadTimeout.
	MaxConcurrentRequests int
	ReadTimeout           time.Duration
	// Registerer receives the cache's metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives one line per refusal and per upstream outcome; never
	// a value or a token.
	Logger logr.Logger
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Validate fills in the defaults and checks what a command line sets:
// everything but the Reviewer, which New requires.
func (o *Options) Validate() error {
	errs := []error{
		orDefault("TTL", &o.TTL, DefaultTTL),
		orDefault("upstream timeout", &o.UpstreamTimeout, DefaultUpstreamTimeout),
		orDefault("review wait", &o.ReviewWait, DefaultReviewWait),
		orDefault("write timeout", &o.WriteTimeout, DefaultWriteTimeout),
		orDefault("read timeout", &o.ReadTimeout, DefaultReadTimeout),
		orDefault("max concurrent requests", &o.MaxConcurrentRequests, DefaultMaxConcurrentRequests),
		orDefault("max requests per namespace", &o.MaxRequestsPerNamespace, DefaultMaxRequestsPerNamespace),
		orDefault("max concurrent reviews", &o.MaxConcurrentReviews, DefaultMaxConcurrentReviews),
		orDefault("max entries", &o.MaxEntries, DefaultMaxEntries),
		orDefault("max bytes", &o.MaxBytes, DefaultMaxBytes),
	}
	if o.MaxAnswerBytesInFlight == 0 {
		o.MaxAnswerBytesInFlight = DefaultMaxAnswerBytesInFlight
	}
	if o.MaxAnswerBytesInFlight < minAnswerBytesInFlight {
		errs = append(errs, fmt.Errorf("max answer bytes in flight %d is under %d", o.MaxAnswerBytesInFlight, minAnswerBytesInFlight))
	}
	if o.MaxStale == 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.MaxStale < 0 {
		o.MaxStale = 0
	}
	if o.RatePerSecond == 0 {
		o.RatePerSecond = DefaultRatePerSecond
	}
	if o.RateBurst == 0 {
		o.RateBurst = DefaultRateBurst
	}
	if o.RatePerSecond < 0 || o.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("rate %v/s, burst %d: neither may be negative", o.RatePerSecond, o.RateBurst))
	}
	if o.Cloud.Name == "" {
		o.Cloud, _ = spec.LookupCloud(spec.DefaultCloud)
	}
	if _, err := spec.ParseAuthorityHost(o.AuthorityHost, o.Cloud); err != nil {
		errs = append(errs, fmt.Errorf("authority host %w", err))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return errors.Join(errs...)
}

// orDefault sets *v to def when it is zero, and says so when it is
// negative.
func orDefault[T ~int | ~int64](name string, v *T, def T) error {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		return fmt.Errorf("%s %v is negative", name, *v)
	}
	return nil
}

// validate is Validate, with the Reviewer required.
func (o *Options) validate() error {
	err := o.Validate()
	if o.Reviewer == nil {
		err = errors.Join(err, errors.New("no token reviewer"))
	}
	return err
}
