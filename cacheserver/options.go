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

// Options configure the cache: defaults from Complete, checks in Validate.
// New completes and validates its own copy.
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

// Complete fills in the defaults of the fields left zero. It may be
// called more than once: a negative MaxStale (never stale) stays negative.
func (o *Options) Complete() {
	orDefault(&o.TTL, DefaultTTL)
	orDefault(&o.MaxStale, DefaultMaxStale)
	orDefault(&o.UpstreamTimeout, DefaultUpstreamTimeout)
	orDefault(&o.ReviewWait, DefaultReviewWait)
	orDefault(&o.WriteTimeout, DefaultWriteTimeout)
	orDefault(&o.ReadTimeout, DefaultReadTimeout)
	orDefault(&o.MaxConcurrentRequests, DefaultMaxConcurrentRequests)
	orDefault(&o.MaxRequestsPerNamespace, DefaultMaxRequestsPerNamespace)
	orDefault(&o.MaxConcurrentReviews, DefaultMaxConcurrentReviews)
	orDefault(&o.MaxEntries, DefaultMaxEntries)
	orDefault(&o.MaxBytes, DefaultMaxBytes)
	orDefault(&o.MaxAnswerBytesInFlight, DefaultMaxAnswerBytesInFlight)
	orDefault(&o.RatePerSecond, DefaultRatePerSecond)
	orDefault(&o.RateBurst, DefaultRateBurst)
	if o.Cloud.Name == "" {
		o.Cloud = spec.PublicCloud()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Validate checks completed options, all but the Reviewer, which New
// requires; it changes nothing.
func (o *Options) Validate() error {
	errs := []error{
		positive("TTL", o.TTL),
		positive("upstream timeout", o.UpstreamTimeout),
		positive("review wait", o.ReviewWait),
		positive("write timeout", o.WriteTimeout),
		positive("read timeout", o.ReadTimeout),
		positive("max concurrent requests", o.MaxConcurrentRequests),
		positive("max requests per namespace", o.MaxRequestsPerNamespace),
		positive("max concurrent reviews", o.MaxConcurrentReviews),
		positive("max entries", o.MaxEntries),
		positive("max bytes", o.MaxBytes),
		positive("rate", o.RatePerSecond),
		positive("rate burst", o.RateBurst),
	}
	if o.MaxAnswerBytesInFlight < minAnswerBytesInFlight {
		errs = append(errs, fmt.Errorf("max answer bytes in flight %d is under %d", o.MaxAnswerBytesInFlight, minAnswerBytesInFlight))
	}
	if o.Cloud.Name == "" {
		errs = append(errs, errors.New("no cloud"))
	}
	if _, err := spec.ParseAuthorityHost(o.AuthorityHost, o.Cloud); err != nil {
		errs = append(errs, fmt.Errorf("authority host %w", err))
	}
	if o.Now == nil {
		errs = append(errs, errors.New("no clock"))
	}
	return errors.Join(errs...)
}

// staleFor is how long past its TTL a value may be served: MaxStale, or 0
// when MaxStale is negative.
func (o *Options) staleFor() time.Duration { return max(o.MaxStale, 0) }

// orDefault sets *v to def when it is zero.
func orDefault[T ~int | ~int64 | ~float64](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// positive says so when v is not above zero.
func positive[T ~int | ~int64 | ~float64](name string, v T) error {
	if v <= 0 {
		return fmt.Errorf("%s %v is not positive", name, v)
	}
	return nil
}

// validate completes and validates a copy of the options for New, with the
// Reviewer required.
func (o *Options) validate() error {
	o.Complete()
	err := o.Validate()
	if o.Reviewer == nil {
		err = errors.Join(err, errors.New("no token reviewer"))
	}
	return err
}
