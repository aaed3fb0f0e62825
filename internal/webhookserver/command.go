package webhookserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kvinject/kvinject/internal/selfcert"
	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/webhook"
)

// LoadCacheCA reads o.CacheCAFile (--cache-ca-file) into o.CacheCA.
func LoadCacheCA(o *webhook.Options) error {
	if o.CacheCAFile == "" {
		return nil
	}
	b, err := ReadCacheCA(o.CacheCAFile)
	if err != nil {
		return fmt.Errorf("--cache-ca-file: %w", err)
	}
	o.CacheCA = b
	return nil
}

// Command runs the webhook server from its command line (name is how
// errors name the program: "kvinject webhook", "kvinject-webhook") until
// ctx ends, and returns the process exit code.
func Command(ctx context.Context, name string, args []string, stderr io.Writer) int {
	o := DefaultServerOptions()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.Mutation.AddFlags(fs)
	fs.IntVar(&o.Port, "port", o.Port, "port of the webhook server")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of /metrics (HTTPS with the webhook's certificate, for bearer tokens allowed to get /metrics), or 0 to disable")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file (default: KUBECONFIG, else in-cluster)")
	selfSigned := selfcert.DefaultOptions()
	selfSigned.AddFlags(fs)
	verbose := fs.Bool("v", false, "log every admission")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	if selfSigned.Enabled() {
		o.SelfSigned = &selfSigned
	}
	// Read again while the webhook runs: the CA rotates with the cache's
	// certificate. With self-signed certificates the file may be the CA
	// bundle the webhook writes itself, which the first start must write
	// before it can be read.
	caFile := o.Mutation.CacheCAFile
	_, statErr := os.Stat(caFile)
	written := caFile != "" && o.SelfSigned != nil && errors.Is(statErr, os.ErrNotExist)
	validate := func() bool {
		err := LoadCacheCA(&o.Mutation)
		if err == nil {
			o.Complete()
			err = o.Validate()
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return false
		}
		return true
	}
	if !written && !validate() {
		return 2
	}
	ctx, log := serving.Logger(ctx, stderr, *verbose)
	cfg, err := serving.RestConfig(o.Kubeconfig)
	if err != nil {
		log.Error(err, "cannot start")
		return 1
	}
	if written {
		if err := EnsureSelfSigned(ctx, o, cfg); err != nil {
			log.Error(err, "cannot start: the self-signed certificates")
			return 1
		}
		if !validate() {
			return 2
		}
	}
	// What the mutation may use depends on the API server's version.
	v, err := ServerVersion(cfg)
	if err == nil {
		err = o.Mutation.SetKubeVersion(v)
	}
	if err != nil {
		log.Error(err, "cannot start")
		return 1
	}
	log.Info("API server", "version", v)
	if err := Serve(ctx, o, cfg); err != nil {
		log.Error(err, "webhook stopped")
		return 1
	}
	return 0
}
