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
// flags say, and call Validate once; New trusts validated Options.
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
	// CertDir receives tls.crt and tls.key.
	CertDir string
	// CAValidity and CertValidity are the lifetimes of the CA and of the serving certificate;
	// each is renewed at 2/3 of its lifetime.
	CAValidity   time.Duration
	CertValidity time.Duration
	// ResyncInterval bounds the time between two checks when nothing changes.
	ResyncInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Derived by Validate.
	validated bool
	dnsNames  []string
}

// DefaultOptions are the defaults, before flags. SecretName is empty: self-signed mode is off.
func DefaultOptions() Options {
	return Options{
		ServiceName:       "kvinject-webhook",
		WebhookConfigName: "kvinject",
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
	fs.DurationVar(&o.CAValidity, "self-signed-ca-validity", o.CAValidity, "lifetime of the self-signed CA (renewed at 2/3)")
	fs.DurationVar(&o.CertValidity, "self-signed-cert-validity", o.CertValidity, "lifetime of the serving certificate (renewed at 2/3)")
}

// Enabled tells whether self-signed mode is asked for.
func (o *Options) Enabled() bool { return o.SecretName != "" }

// Validate checks the options once and derives the serving certificate's DNS names.
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
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is empty"))
	} else if !filepath.IsAbs(o.CertDir) {
		errs = append(errs, fmt.Errorf("--cert-dir %q must be an absolute path", o.CertDir))
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
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	svc, ns := o.ServiceName, o.Namespace
	o.dnsNames = []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc, svc + "." + ns}
	o.validated = true
	return nil
}

// DNSNames are the names in the serving certificate (after Validate).
func (o *Options) DNSNames() []string { return append([]string(nil), o.dnsNames...) }
