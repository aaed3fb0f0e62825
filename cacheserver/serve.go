package cacheserver

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/internal/spec"
)

// ServeOptions configure `kvinject cache`: the cache, and the servers
// around it, set up as the webhook's are.
type ServeOptions struct {
	Cache Options
	// Host, Port and CertDir (tls.crt, tls.key, reloaded when they change)
	// of the HTTPS server answering cacheapi.Path.
	Host    string
	Port    int
	CertDir string
	// MetricsAddr serves /metrics over HTTPS (the same certificate) to
	// bearer tokens that pass a TokenReview and may get /metrics; "0"
	// disables it. ProbeAddr serves /healthz and /readyz over plain HTTP.
	MetricsAddr string
	ProbeAddr   string
}

// DefaultServeOptions are the cache's defaults, before flags: the cache's
// own completed.
func DefaultServeOptions() ServeOptions {
	o := ServeOptions{
		Port:        9443,
		CertDir:     "/tmp/k8s-webhook-server/serving-certs",
		MetricsAddr: ":8443",
		ProbeAddr:   ":8081",
	}
	o.Cache.Complete()
	return o
}

// AddFlags binds the options to the command line of `kvinject cache`, with
// their current values as the defaults.
func (o *ServeOptions) AddFlags(fs *flag.FlagSet) {
	c := &o.Cache
	fs.IntVar(&o.Port, "port", o.Port, "port of the HTTPS server agents ask")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics (HTTPS with the same certificate, for bearer tokens allowed to get /metrics), or 0 to disable")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.DurationVar(&c.TTL, "ttl", c.TTL, "how long a value is served before Key Vault is asked again, and how long an identity's access token is reused")
	fs.DurationVar(&c.MaxStale, "max-stale", c.MaxStale, "how long past its TTL a value is still served while Entra ID or Key Vault is unreachable or failing (negative: never)")
	fs.IntVar(&c.MaxEntries, "max-entries", c.MaxEntries, "most values kept; the least recently used go first")
	fs.Int64Var(&c.MaxBytes, "max-bytes", c.MaxBytes, "most bytes of values kept")
	fs.Float64Var(&c.RatePerSecond, "rate", c.RatePerSecond, "requests per second allowed to each ServiceAccount")
	fs.IntVar(&c.RateBurst, "rate-burst", c.RateBurst, "burst of requests allowed to each ServiceAccount (a rollout's pods)")
	fs.IntVar(&c.MaxConcurrentReviews, "max-concurrent-reviews", c.MaxConcurrentReviews, "TokenReviews in flight at most; a request that finds none free within 5s is refused with 503 (its agent goes to Azure directly)")
	fs.Int64Var(&c.MaxAnswerBytesInFlight, "max-answer-bytes-in-flight", c.MaxAnswerBytesInFlight, "bytes of answers being written at once, all callers together; a request that finds no room within 5s is refused with 503")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "time limit on writing one answer, so that a client that does not read gives its room back")
	fs.IntVar(&c.MaxRequestsPerNamespace, "max-requests-per-namespace", c.MaxRequestsPerNamespace, "requests of one namespace's pods answered at once; one that finds no slot within 5s is refused with 503")
	fs.IntVar(&c.MaxConcurrentRequests, "max-concurrent-requests", c.MaxConcurrentRequests, "requests handled at once, before anyone is authenticated; more are refused with 503 at once")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "time limit on reading a request's body (the request's headers: 32s)")
	fs.Var(&c.Cloud, "cloud", spec.CloudUsage())
	fs.StringVar(&c.AuthorityHost, "authority-host", c.AuthorityHost, "Entra ID authority host (default: the cloud's)")
}

// Complete fills in the defaults, the cache's included.
func (o *ServeOptions) Complete() { o.Cache.Complete() }

// Validate checks completed options, the cache's included, all but the
// Reviewer, which Serve makes; it changes nothing.
func (o *ServeOptions) Validate() error {
	errs := []error{o.Cache.Validate()}
	if o.Port <= 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not a port", o.Port))
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is empty"))
	}
	return errors.Join(errs...)
}

// Serve runs the cache until ctx ends. It proves callers with TokenReviews
// through cfg, unless o.Cache.Reviewer is already set.
func Serve(ctx context.Context, o ServeOptions, cfg *rest.Config) error {
	o.Complete()
	if o.Cache.Reviewer == nil {
		r, err := NewAPITokenReviewer(cfg)
		if err != nil {
			return err
		}
		o.Cache.Reviewer = r
	}
	if o.Cache.Registerer == nil {
		o.Cache.Registerer = ctrlmetrics.Registry
	}
	if o.Cache.Logger.GetSink() == nil {
		o.Cache.Logger = ctrllog.FromContext(ctx).WithName("cache")
	}
	cache, err := New(o.Cache)
	if err != nil {
		return err
	}
	defer cache.Close()
	// The manager's client reads nothing: an empty scheme.
	scheme := runtime.NewScheme()
	// The manager brings what the webhook has: certificate reloading, TLS
	// 1.2 at least, authenticated metrics, probes and a graceful stop. It
	// watches nothing: the cache asks the API server only to review tokens.
	mgr, err := manager.New(cfg, serving.ManagerOptions(serving.Addresses{
		Host: o.Host, Port: o.Port, CertDir: o.CertDir, MetricsAddr: o.MetricsAddr, ProbeAddr: o.ProbeAddr}, scheme))
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	srv := mgr.GetWebhookServer()
	srv.Register(cacheapi.Path, cache)
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache", srv.StartedChecker()); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	ctrllog.FromContext(ctx).Info("starting kvinject cache", "port", o.Port, "path", cacheapi.Path,
		"ttl", o.Cache.TTL.String(), "maxStale", o.Cache.staleFor().String(), "cloud", o.Cache.Cloud.Name)
	return mgr.Start(ctx)
}
