package selfcert

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Options configure the self-signed certificate. Build them with DefaultOptions, set what the
// flags say (AddFlags), call Complete, then Validate; New validates them again.
type Options struct {
	// SecretName is the Secret holding the CA and serving certificate; empty disables
	// self-signed mode.
	SecretName string
	// Namespace of the Secret and of the Service (the webhook's own namespace; pass it from
	// the downward API).
	Namespace string
	// ServiceName is the webhook's Service: the serving certificate is for its DNS names.
	ServiceName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose caBundle is kept current.
	WebhookConfigName string
	// CertDir receives tls.crt and tls.key, and the CA bundle as ca.crt (FileCABundle).
	CertDir string
	// CacheSecretName is the Secret receiving the cluster cache's serving certificate (kvinject
	// cache), signed by the same CA; empty: none. It must differ from SecretName.
	CacheSecretName string
	// CacheServiceName is the cache's Service (in Namespace): the cache's certificate is for its
	// DNS names.
	CacheServiceName string
	// ClusterDomain is the cluster's DNS domain: the certificates name
	// SERVICE.NAMESPACE.svc.ClusterDomain, the fully qualified name agents
	// ask the cache by. Default DefaultClusterDomain.
	ClusterDomain string
	// CAValidity and CertValidity are the lifetimes of the CA and of the serving certificate;
	// each is renewed at 2/3 of its lifetime.
	CAValidity   time.Duration
	CertValidity time.Duration
	// ResyncInterval bounds the time between two checks when nothing changes.
	ResyncInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Derived by Complete.
	completed     bool
	dnsNames      []string
	cacheDNSNames []string
}

// DefaultClusterDomain is Kubernetes' default cluster DNS domain.
const DefaultClusterDomain = "cluster.local"

// DefaultOptions are the defaults, before flags. SecretName is empty: self-signed mode is off.
func DefaultOptions() Options {
	return Options{
		ServiceName:       "kvinject-webhook",
		WebhookConfigName: "kvinject",
		CacheServiceName:  "kvinject-cache",
		ClusterDomain:     DefaultClusterDomain,
		CAValidity:        10 * 365 * 24 * time.Hour,
		CertValidity:      365 * 24 * time.Hour,
		ResyncInterval:    time.Minute,
	}
}

// AddFlags binds the options to flags of `kvinject webhook`.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.SecretName, "self-signed-cert-secret", o.SecretName,
		"make, rotate and serve a self-signed certificate kept in this Secret, and keep the webhook configuration's caBundle current (off when empty)")
	fs.StringVar(&o.Namespace, "self-signed-namespace", o.Namespace,
		"namespace of that Secret and of the webhook's Service (the webhook's own namespace)")
	fs.StringVar(&o.ServiceName, "service-name", o.ServiceName, "the webhook's Service, named by the self-signed certificate")
	fs.StringVar(&o.WebhookConfigName, "webhook-config-name", o.WebhookConfigName,
		"MutatingWebhookConfiguration whose caBundle the self-signed mode keeps current")
	fs.StringVar(&o.CacheSecretName, "self-signed-cache-secret", o.CacheSecretName,
		"also issue the cluster cache's serving certificate, signed by the same CA, into this Secret (tls.crt, tls.key, ca.crt; off when empty)")
	fs.StringVar(&o.CacheServiceName, "cache-service-name", o.CacheServiceName, "the cache's Service, named by its self-signed certificate")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "the cluster's DNS domain, named by the self-signed certificates (SERVICE.NAMESPACE.svc.DOMAIN)")
	fs.DurationVar(&o.CAValidity, "self-signed-ca-validity", o.CAValidity, "lifetime of the self-signed CA (renewed at 2/3)")
	fs.DurationVar(&o.CertValidity, "self-signed-cert-validity", o.CertValidity, "lifetime of the serving certificate (renewed at 2/3)")
}

// Enabled tells whether self-signed mode is asked for (a cache Secret alone asks for it too, and
// fails Validate).
func (o *Options) Enabled() bool { return o.SecretName != "" || o.CacheSecretName != "" }

// CacheEnabled tells whether the cache's certificate is asked for.
func (o *Options) CacheEnabled() bool { return o.CacheSecretName != "" }

// Complete fills in the defaults (ClusterDomain, Now) and derives the certificates' DNS names.
func (o *Options) Complete() {
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.dnsNames = serviceDNSNames(o.ServiceName, o.Namespace, o.ClusterDomain)
	o.cacheDNSNames = nil
	if o.CacheEnabled() {
		o.cacheDNSNames = serviceDNSNames(o.CacheServiceName, o.Namespace, o.ClusterDomain)
	}
	o.completed = true
}

// Validate reports every problem of completed options at once; it changes nothing.
func (o *Options) Validate() error {
	var errs []error
	check := func(flagName, value string, msgs []string) {
		if value == "" {
			errs = append(errs, fmt.Errorf("--%s is empty", flagName))
			return
		}
		for _, m := range msgs {
			errs = append(errs, fmt.Errorf("--%s %q: %s", flagName, value, m))
		}
	}
	check("self-signed-cert-secret", o.SecretName, validation.IsDNS1123Subdomain(o.SecretName))
	check("self-signed-namespace", o.Namespace, validation.IsDNS1123Label(o.Namespace))
	check("service-name", o.ServiceName, validation.IsDNS1035Label(o.ServiceName))
	check("webhook-config-name", o.WebhookConfigName, validation.IsDNS1123Subdomain(o.WebhookConfigName))
	if o.CacheEnabled() {
		if o.SecretName == "" {
			errs = append(errs, errors.New("--self-signed-cache-secret needs --self-signed-cert-secret: the CA that signs the cache's certificate lives there"))
		}
		check("self-signed-cache-secret", o.CacheSecretName, validation.IsDNS1123Subdomain(o.CacheSecretName))
		check("cache-service-name", o.CacheServiceName, validation.IsDNS1035Label(o.CacheServiceName))
		if o.CacheSecretName == o.SecretName {
			errs = append(errs, fmt.Errorf("--self-signed-cache-secret %q is also --self-signed-cert-secret: the cache's Secret must not hold the CA's key", o.CacheSecretName))
		}
		if o.CacheServiceName == o.ServiceName {
			errs = append(errs, fmt.Errorf("--cache-service-name %q is also --service-name", o.CacheServiceName))
		}
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is empty"))
	} else if !filepath.IsAbs(o.CertDir) {
		errs = append(errs, fmt.Errorf("--cert-dir %q must be an absolute path", o.CertDir))
	}
	if msgs := validation.IsDNS1123Subdomain(o.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", o.ClusterDomain, msgs[0]))
	}
	if o.CAValidity < time.Second {
		errs = append(errs, fmt.Errorf("--self-signed-ca-validity %s is too short", o.CAValidity))
	}
	if o.CertValidity < time.Second {
		errs = append(errs, fmt.Errorf("--self-signed-cert-validity %s is too short", o.CertValidity))
	}
	if o.CertValidity > o.CAValidity {
		errs = append(errs, fmt.Errorf("--self-signed-cert-validity %s exceeds --self-signed-ca-validity %s", o.CertValidity, o.CAValidity))
	}
	if o.ResyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("resync interval %s must be positive", o.ResyncInterval))
	}
	if !o.completed {
		errs = append(errs, errors.New("selfcert: options not completed"))
	}
	return errors.Join(errs...)
}

// serviceDNSNames are the names a certificate for the Service svc in namespace ns holds, the
// first one its common name. A client asking for the fully qualified name with a trailing dot
// (SVC.NS.svc.DOMAIN.) matches the name without it: Go's crypto/tls and x509 drop the dot.
func serviceDNSNames(svc, ns, domain string) []string {
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc." + domain, svc, svc + "." + ns}
}

// DNSNames are the names in the serving certificate (after Complete).
func (o *Options) DNSNames() []string { return append([]string(nil), o.dnsNames...) }

// CacheDNSNames are the names in the cache's certificate (after Complete; none when it is off).
func (o *Options) CacheDNSNames() []string { return append([]string(nil), o.cacheDNSNames...) }
