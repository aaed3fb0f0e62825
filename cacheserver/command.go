package cacheserver

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/internal/spec"
)

// Command runs the cache's server from its command line (name is how
// errors name the program: "kvinject cache", "kvinject-cache") until ctx
// ends, and returns the process exit code.
func Command(ctx context.Context, name string, args []string, stderr io.Writer) int {
	o := DefaultServeOptions()
	c := &o.Cache
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Port, "port", o.Port, "port of the HTTPS server agents ask")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics (HTTPS with the same certificate, for bearer tokens allowed to get /metrics), or 0 to disable")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.DurationVar(&c.TTL, "ttl", DefaultTTL, "how long a value is served before Key Vault is asked again, and how long an identity's access token is reused")
	fs.DurationVar(&c.MaxStale, "max-stale", DefaultMaxStale, "how long past its TTL a value is still served while Entra ID or Key Vault is unreachable or failing (negative: never)")
	fs.IntVar(&c.MaxEntries, "max-entries", DefaultMaxEntries, "most values kept; the least recently used go first")
	fs.Int64Var(&c.MaxBytes, "max-bytes", DefaultMaxBytes, "most bytes of values kept")
	fs.Float64Var(&c.RatePerSecond, "rate", DefaultRatePerSecond, "requests per second allowed to each ServiceAccount")
	fs.IntVar(&c.RateBurst, "rate-burst", DefaultRateBurst, "burst of requests allowed to each ServiceAccount (a rollout's pods)")
	fs.IntVar(&c.MaxConcurrentReviews, "max-concurrent-reviews", DefaultMaxConcurrentReviews, "TokenReviews in flight at most; a request that finds none free within 5s is refused with 503 (its agent goes to Azure directly)")
	fs.Int64Var(&c.MaxAnswerBytesInFlight, "max-answer-bytes-in-flight", DefaultMaxAnswerBytesInFlight, "bytes of answers being written at once, all callers together; a request that finds no room within 5s is refused with 503")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", DefaultWriteTimeout, "time limit on writing one answer, so that a client that does not read gives its room back")
	fs.IntVar(&c.MaxRequestsPerNamespace, "max-requests-per-namespace", DefaultMaxRequestsPerNamespace, "requests of one namespace's pods answered at once; one that finds no slot within 5s is refused with 503")
	fs.IntVar(&c.MaxConcurrentRequests, "max-concurrent-requests", DefaultMaxConcurrentRequests, "requests handled at once, before anyone is authenticated; more are refused with 503 at once")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", DefaultReadTimeout, "time limit on reading a request's body (the request's headers: 32s)")
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
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	ctx, log := serving.Logger(ctx, stderr, *verbose)
	cfg, err := serving.RestConfig(*kubeconfig)
	if err != nil {
		log.Error(err, "cannot start")
		return 1
	}
	// HTTPS_PROXY is the way out to Entra ID and Key Vault; the API server
	// is reached directly (or through the kubeconfig's own proxy-url).
	if cfg.Proxy == nil {
		cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	if err := Serve(ctx, o, cfg); err != nil {
		log.Error(err, "cache stopped")
		return 1
	}
	return 0
}
