package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"

	"github.com/kvinject/kvinject/cacheserver"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/webhookserver"
)

// runCache is `kvinject cache`: the cluster cache's server.
func runCache(ctx context.Context, args []string, io stdio) int {
	o := cacheserver.DefaultServeOptions()
	c := &o.Cache
	fs := flag.NewFlagSet("kvinject cache", flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.IntVar(&o.Port, "port", o.Port, "port of the HTTPS server agents ask")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics (HTTPS with the same certificate, for bearer tokens allowed to get /metrics), or 0 to disable")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.DurationVar(&c.TTL, "ttl", cacheserver.DefaultTTL, "how long a value is served before Key Vault is asked again, and how long an identity's access token is reused")
	fs.DurationVar(&c.MaxStale, "max-stale", cacheserver.DefaultMaxStale, "how long past its TTL a value is still served while Entra ID or Key Vault is unreachable or failing (negative: never)")
	fs.IntVar(&c.MaxEntries, "max-entries", cacheserver.DefaultMaxEntries, "most values kept; the least recently used go first")
	fs.Int64Var(&c.MaxBytes, "max-bytes", cacheserver.DefaultMaxBytes, "most bytes of values kept")
	fs.Float64Var(&c.RatePerSecond, "rate", cacheserver.DefaultRatePerSecond, "requests per second allowed to each ServiceAccount")
	fs.IntVar(&c.RateBurst, "rate-burst", cacheserver.DefaultRateBurst, "burst of requests allowed to each ServiceAccount (a rollout's pods)")
	fs.IntVar(&c.MaxConcurrentReviews, "max-concurrent-reviews", cacheserver.DefaultMaxConcurrentReviews, "TokenReviews in flight at most; a request that finds none free within 5s is refused with 503 (its agent goes to Azure directly)")
	fs.Int64Var(&c.MaxAnswerBytesInFlight, "max-answer-bytes-in-flight", cacheserver.DefaultMaxAnswerBytesInFlight, "bytes of answers being written at once, all callers together; a request that finds no room within 5s is refused with 503")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", cacheserver.DefaultWriteTimeout, "time limit on writing one answer, so that a client that does not read gives its room back")
	fs.IntVar(&c.MaxRequestsPerNamespace, "max-requests-per-namespace", cacheserver.DefaultMaxRequestsPerNamespace, "requests of one namespace's pods answered at once; one that finds no slot within 5s is refused with 503")
	fs.IntVar(&c.MaxConcurrentRequests, "max-concurrent-requests", cacheserver.DefaultMaxConcurrentRequests, "requests handled at once, before anyone is authenticated; more are refused with 503 at once")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", cacheserver.DefaultReadTimeout, "time limit on reading a request's body (the request's headers: 32s)")
	cloudName := fs.String("cloud", spec.DefaultCloud, "Azure cloud: AzurePublicCloud, AzureChinaCloud or AzureUSGovernment")
	fs.StringVar(&c.AuthorityHost, "authority-host", "", "Entra ID authority host (default: the cloud's)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: KUBECONFIG, else in-cluster)")
	verbose := fs.Bool("v", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cloud, err := spec.LookupCloud(*cloudName)
	if err == nil {
		c.Cloud = cloud
		err = o.Validate()
	}
	if err != nil {
		fmt.Fprintf(io.err, "kvinject cache: %v\n", err)
		return 2
	}
	ctx, log := serverLogger(ctx, io, *verbose)
	cfg, err := webhookserver.RestConfig(*kubeconfig)
	if err != nil {
		log.Error(err, "cannot start")
		return 1
	}
	// HTTPS_PROXY is the way out to Entra ID and Key Vault; the API server
	// is reached directly (or through the kubeconfig's own proxy-url).
	if cfg.Proxy == nil {
		cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	if err := cacheserver.Serve(ctx, o, cfg); err != nil {
		log.Error(err, "cache stopped")
		return 1
	}
	return 0
}
