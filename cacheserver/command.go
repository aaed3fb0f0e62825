package cacheserver

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/kvinject/kvinject/internal/serving"
)

// Command runs the cache's server from its command line (name is how
// errors name the program: "kvinject cache", "kvinject-cache") until ctx
// ends, and returns the process exit code.
func Command(ctx context.Context, name string, args []string, stderr io.Writer) int {
	o := DefaultServeOptions()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.AddFlags(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: KUBECONFIG, else in-cluster)")
	verbose := fs.Bool("v", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	o.Complete()
	if err := o.Validate(); err != nil {
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
