package webhook

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/spec"
)

// Options configure the mutation. Build them with DefaultOptions, set what
// the flags say, and call Validate once; Mutate trusts validated Options.
type Options struct {
	// AgentImage is the image of the kvinject-agent init container.
	AgentImage string
	// CloudName selects the Azure cloud: vault host suffix and authority host.
	CloudName string
	// TenantID is the tenant used when neither the pod nor its
	// ServiceAccount names one.
	TenantID string
	// DefaultVault is used when a pod sets no kvinject.io/vault: a vault
	// name or URL.
	DefaultVault string
	// AuthorityHost overrides the cloud's Entra ID authority host.
	AuthorityHost string
	// SecretsSizeLimit bounds the tmpfs holding the files.
	SecretsSizeLimit resource.Quantity
	// AgentResources are the agent container's requests and limits.
	AgentResources corev1.ResourceRequirements
	// AgentProxy is set on the agent as HTTPS_PROXY and NO_PROXY, for
	// clusters whose egress goes through a proxy.
	AgentHTTPSProxy string
	AgentNoProxy    string
	// AgentCABundle names a ConfigMap key ("NAME/KEY", in the pod's
	// namespace) holding extra PEM CA certificates the agent trusts, e.g. a
	// TLS-inspecting proxy's. The agent gets it as SSL_CERT_FILE.
	AgentCABundle string
	// RefreshResources are the kvinject-refresh sidecar's requests and limits.
	RefreshResources corev1.ResourceRequirements
	// KubeVersion is the API server's version ("1.33", "v1.33.5+abcdef"),
	// which decides what the mutation may use (native sidecars from 1.29).
	// The webhook asks the API server at start; `kvinject inject` takes
	// --kube-version. Empty: NewestKubeVersion.
	KubeVersion string

	// Derived by Validate.
	kubeMinor     int
	cloud         spec.Cloud
	defaultVault  string
	authorityHost string
	caConfigMap   string
	caKey         string
	templates     *templateCache
}

// NewestKubeVersion is the newest Kubernetes version this build knows.
const NewestKubeVersion = "1.37"

// DefaultOptions are the webhook's defaults, before flags.
func DefaultOptions() Options {
	return Options{
		CloudName:        spec.DefaultCloud,
		SecretsSizeLimit: resource.MustParse("4Mi"),
		AgentResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("500m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
		// Idle between refreshes; a refresh peaks like the agent's run.
		RefreshResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("5m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
	}
}

// Validate checks the options and derives what Mutate needs.
func (o *Options) Validate() error {
	var errs []error
	o.templates = newTemplateCache()
	if o.KubeVersion == "" {
		o.KubeVersion = NewestKubeVersion
	}
	minor, err := KubeMinor(o.KubeVersion)
	if err != nil {
		errs = append(errs, fmt.Errorf("the Kubernetes version: %w", err))
	}
	o.kubeMinor = minor
	if o.AgentImage == "" {
		errs = append(errs, errors.New("the agent image is not set (--agent-image)"))
	}
	cloud, err := spec.LookupCloud(o.CloudName)
	if err != nil {
		errs = append(errs, fmt.Errorf("--cloud: %w", err))
	}
	o.cloud = cloud
	o.authorityHost = cloud.AuthorityHost
	if o.AuthorityHost != "" {
		if !strings.HasPrefix(o.AuthorityHost, "https://") {
			errs = append(errs, fmt.Errorf("--authority-host %q must be an https:// URL", o.AuthorityHost))
		}
		o.authorityHost = o.AuthorityHost
	}
	o.defaultVault = ""
	if o.DefaultVault != "" && err == nil {
		v, err := spec.ParseVault(o.DefaultVault, cloud)
		if err != nil {
			errs = append(errs, fmt.Errorf("--default-vault: %w", err))
		}
		o.defaultVault = v
	}
	if o.TenantID != "" {
		if err := spec.ValidateTenantID(o.TenantID); err != nil {
			errs = append(errs, fmt.Errorf("--tenant-id: %w", err))
		}
	}
	if o.AgentHTTPSProxy != "" {
		if err := validateProxy(o.AgentHTTPSProxy); err != nil {
			errs = append(errs, fmt.Errorf("--agent-https-proxy: %w", err))
		}
	}
	if o.SecretsSizeLimit.Sign() <= 0 {
		errs = append(errs, errors.New("the secrets volume size limit must be positive"))
	}
	o.caConfigMap, o.caKey = "", ""
	if o.AgentCABundle != "" {
		name, key, ok := strings.Cut(o.AgentCABundle, "/")
		if !ok || name == "" || key == "" || strings.Contains(key, "/") {
			errs = append(errs, fmt.Errorf("--agent-ca-bundle %q must be CONFIGMAP/KEY", o.AgentCABundle))
		}
		o.caConfigMap, o.caKey = name, key
	}
	return errors.Join(errs...)
}

// SetKubeVersion records the API server's version, learned after the
// options were validated (the webhook asks the API server at start).
func (o *Options) SetKubeVersion(v string) error {
	minor, err := KubeMinor(v)
	if err != nil {
		return fmt.Errorf("the Kubernetes version: %w", err)
	}
	o.KubeVersion, o.kubeMinor = v, minor
	return nil
}

// KubeMinor returns the minor version of a Kubernetes 1.x version as
// "1.33", "v1.33.5" or "v1.33.5+vendor" (a git version) give it.
func KubeMinor(v string) (int, error) {
	rest, ok := strings.CutPrefix(strings.TrimPrefix(v, "v"), "1.")
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	minor, err := strconv.Atoi(rest[:end])
	if !ok || err != nil || end > 3 {
		return 0, fmt.Errorf("%s is not a Kubernetes 1.x version like 1.33", spec.Quote(v))
	}
	return minor, nil
}

// Cloud is the validated cloud.
func (o *Options) Cloud() spec.Cloud { return o.cloud }

// validateProxy refuses a proxy URL that carries credentials: the URL is
// set in every injected pod's spec, which anyone who can get pods reads.
func validateProxy(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil {
		return errors.New("must not carry a user or password (every injected pod's spec would show it to anyone who can get pods): use an egress proxy that needs no credentials")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("must be an http:// or https:// URL with a host")
	}
	return nil
}
