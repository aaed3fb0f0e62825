package webhook

import (
	"flag"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/spec"
)

// AddFlags binds the options to the flags the webhook and `kvinject
// inject` share, with their current values as the defaults. Validate's
// errors name these flags.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.AgentImage, "agent-image", o.AgentImage, "image of the kvinject-agent init container")
	fs.StringVar(&o.TenantID, "tenant-id", o.TenantID, "Entra ID tenant when neither the pod nor its ServiceAccount names one")
	fs.Var(&o.Cloud, "cloud", spec.CloudUsage())
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
	fs.StringVar(&o.CacheCAFile, "cache-ca-file", o.CacheCAFile, "PEM file of the CAs that sign the cache's certificate, which the agent trusts alone for the cache (required with --cache-url)")
	delivery := o.EnvDelivery
	if delivery == "" {
		delivery = spec.DeliveryAuto
	}
	fs.StringVar(&o.EnvDelivery, "env-delivery", delivery, "how "+spec.AnnotationEnvPrefix+"<VAR> variables reach the containers: "+spec.DeliveryAuto+" (fileKeyRef where the API server keeps it and every kubelet is 1.35 or newer, else the exec wrapper), "+spec.DeliveryFileKeyRef+" or "+spec.DeliveryExec)
	for _, f := range ResourceFlags(*o) {
		fs.Func(f.Name, f.Usage, func(v string) error { return f.Set(o, v) })
	}
	fs.BoolVar(&o.CacheByDefault, "cache-by-default", o.CacheByDefault, "pods without "+spec.AnnotationCache+" use the cache as with \"true\" (needs --cache-url)")
}
