package webhookserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/selfcert"
	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// MutationFlags binds the flags shared by the webhook and `kvinject
// inject`. It returns --cache-ca-file, which LoadCacheCA reads after
// parsing.
func MutationFlags(fs *flag.FlagSet, o *webhook.Options) (cacheCAFile *string) {
	fs.StringVar(&o.AgentImage, "agent-image", o.AgentImage, "image of the kvinject-agent init container")
	fs.StringVar(&o.TenantID, "tenant-id", o.TenantID, "Entra ID tenant when neither the pod nor its ServiceAccount names one")
	fs.StringVar(&o.CloudName, "cloud", o.CloudName, "Azure cloud: AzurePublicCloud, AzureChinaCloud or AzureUSGovernment")
	fs.StringVar(&o.DefaultVault, "default-vault", o.DefaultVault, "vault name or URL for pods without "+spec.AnnotationVault)
	fs.StringVar(&o.AuthorityHost, "authority-host", o.AuthorityHost, "Entra ID authority host (default: the cloud's)")
	fs.StringVar(&o.AgentHTTPSProxy, "agent-https-proxy", o.AgentHTTPSProxy, "HTTPS_PROXY for the agent, when egress goes through a proxy")
	fs.StringVar(&o.AgentNoProxy, "agent-no-proxy", o.AgentNoProxy, "NO_PROXY for the agent")
	fs.StringVar(&o.AgentCABundle, "agent-ca-bundle", o.AgentCABundle, "CONFIGMAP/KEY in the pod's namespace with extra PEM CAs for the agent (e.g. a proxy's)")
	fs.Func("secrets-size-limit", "size limit of the tmpfs holding the files (default "+o.SecretsSizeLimit.String()+")", func(s string) error {
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return err
		}
		o.SecretsSizeLimit = q
		return nil
	})
	fs.StringVar(&o.CacheURL, "cache-url", o.CacheURL, "https:// URL of the cluster cache (kvinject cache) for pods that opt in with "+spec.AnnotationCache+" (default: no cache)")
	cacheCAFile = fs.String("cache-ca-file", "", "PEM file of the CAs that sign the cache's certificate, which the agent trusts alone for the cache (required with --cache-url)")
	fs.StringVar(&o.EnvDelivery, "env-delivery", spec.DeliveryAuto, "how "+spec.AnnotationEnvPrefix+"<VAR> variables reach the containers: "+spec.DeliveryAuto+" (fileKeyRef where the API server keeps it and every kubelet is 1.35 or newer, else the exec wrapper), "+spec.DeliveryFileKeyRef+" or "+spec.DeliveryExec)
	for _, f := range webhook.ResourceFlags(*o) {
		fs.Func(f.Name, f.Usage, func(v string) error { return f.Set(o, v) })
	}
	fs.BoolVar(&o.CacheByDefault, "cache-by-default", o.CacheByDefault, "pods without "+spec.AnnotationCache+" use the cache as with \"true\" (needs --cache-url)")
	return cacheCAFile
}

// LoadCacheCA reads --cache-ca-file into o.CacheCA.
func LoadCacheCA(path string, o *webhook.Options) error {
	if path == "" {
		return nil
	}
	b, err := ReadCacheCA(path)
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
	cacheCAFile := MutationFlags(fs, &o.Mutation)
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
	o.CacheCAFile = *cacheCAFile
	_, statErr := os.Stat(o.CacheCAFile)
	written := o.CacheCAFile != "" && o.SelfSigned != nil && errors.Is(statErr, os.ErrNotExist)
	validate := func() bool {
		err := LoadCacheCA(o.CacheCAFile, &o.Mutation)
		if err == nil {
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
