package cacheserver

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/serving"
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

// DefaultServeOptions are the cache's defaults, before flags.
func DefaultServeOptions() ServeOptions {
	return ServeOptions{
		Port:        9443,
		CertDir:     "/tmp/k8s-webhook-server/serving-certs",
		MetricsAddr: ":8443",
		ProbeAddr:   ":8081",
	}
}

// Validate checks the options once, the cache's own included (filling in
// their defaults), all but the Reviewer, which Serve makes.
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
		"ttl", o.Cache.TTL.String(), "maxStale", o.Cache.MaxStale.String(), "cloud", o.Cache.Cloud.Name)
	return mgr.Start(ctx)
}
