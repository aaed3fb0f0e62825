package webhook

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/spec"
)

// Options configure the mutation. Build them with DefaultOptions, set what
// the flags say (AddFlags), call Complete, then Validate; Mutate trusts
// completed, validated Options.
type Options struct {
	// AgentImage is the image of the kvinject-agent init container.
	AgentImage string
	// Cloud gives the vault host suffix and the authority host; zero: the
	// public cloud.
	Cloud spec.Cloud
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
	// MaxInjectedCPU and MaxInjectedMemory bound what a pod may ask for its
	// agent and refresh sidecar with resource annotations; zero: pods may
	// not change them.
	MaxInjectedCPU, MaxInjectedMemory resource.Quantity
	// KubeVersion is the API server's version ("1.33", "v1.33.5+abcdef"),
	// which decides what the mutation may use (native sidecars from 1.29).
	// The webhook asks the API server at start; `kvinject inject` takes
	// --kube-version. Empty: NewestKubeVersion.
	KubeVersion string
	// CacheURL is the cluster cache's https:// URL
	// (https://kvinject-cache.kvinject-system.svc.cluster.local., fully
	// qualified with a trailing dot): pods that opt in
	// (spec.AnnotationCache) get it in their spec. Empty: the cluster runs
	// no cache.
	CacheURL string
	// CacheCA is the PEM bundle of the CAs that sign the cache's serving
	// certificate, which the agent trusts alone for the cache. Required
	// with CacheURL.
	CacheCA []byte
	// CacheCAFile is the file the commands read CacheCA from
	// (webhookserver.LoadCacheCA), and the webhook reads again while it
	// runs; Mutate reads CacheCA alone.
	CacheCAFile string
	// EnvDelivery is how env variables reach the containers:
	// spec.DeliveryAuto (default), spec.DeliveryFileKeyRef or
	// spec.DeliveryExec.
	EnvDelivery string
	// Cluster is what the webhook learned of the cluster for
	// spec.DeliveryAuto (WithCluster); nil: ClusterOfVersion(KubeVersion),
	// as `kvinject inject` assumes.
	Cluster *Cluster
	// CacheByDefault gives pods without spec.AnnotationCache the cache, as
	// spec.CacheOn does. Needs CacheURL.
	CacheByDefault bool

	// Derived by Complete.
	kubeMinor     int
	defaultVault  string
	authorityHost string
	caConfigMap   string
	caKey         string
	cacheURL      string
	cacheCA       string // CacheCA's certificates alone, as PEM
	templates     *templateCache
}

// NewestKubeVersion is the newest Kubernetes version this build knows.
const NewestKubeVersion = "1.37"

// DefaultOptions are the webhook's defaults, before flags.
func DefaultOptions() Options {
	return Options{
		Cloud:            spec.PublicCloud(),
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

// Complete fills in the defaults and derives what Mutate needs from the
// fields; what does not parse is left for Validate to report. Calling it
// again derives again.
func (o *Options) Complete() {
	if o.KubeVersion == "" {
		o.KubeVersion = NewestKubeVersion
	}
	if o.EnvDelivery == "" {
		o.EnvDelivery = spec.DeliveryAuto
	}
	if o.Cloud.Name == "" {
		o.Cloud = spec.PublicCloud()
	}
	o.templates = newTemplateCache()
	_ = o.derive()
}

// Validate reports every problem of completed options at once; it
// changes nothing.
func (o *Options) Validate() error {
	c := *o
	return c.derive()
}

// derive parses the fields into what Mutate needs, and says what does not
// parse.
func (o *Options) derive() error {
	var errs []error
	minor, err := KubeMinor(o.KubeVersion)
	if err != nil {
		errs = append(errs, fmt.Errorf("the Kubernetes version: %w", err))
	}
	o.kubeMinor = minor
	switch o.EnvDelivery {
	case spec.DeliveryAuto, spec.DeliveryFileKeyRef, spec.DeliveryExec:
	default:
		errs = append(errs, fmt.Errorf("the env delivery %s must be %s, %s or %s", spec.Quote(o.EnvDelivery), spec.DeliveryAuto, spec.DeliveryFileKeyRef, spec.DeliveryExec))
	}
	if o.AgentImage == "" {
		errs = append(errs, errors.New("the agent image is not set (--agent-image)"))
	}
	cloud := o.Cloud
	var cloudErr error
	if cloud.Name == "" {
		cloudErr = errors.New("--cloud: no cloud")
		errs = append(errs, cloudErr)
	}
	// The agent reads AZURE_AUTHORITY_HOST with the same parser.
	if o.authorityHost, err = spec.ParseAuthorityHost(o.AuthorityHost, cloud); err != nil {
		errs = append(errs, fmt.Errorf("--authority-host %w", err))
	}
	o.defaultVault = ""
	if o.DefaultVault != "" && cloudErr == nil {
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
		if err := spec.ValidateProxyURL(o.AgentHTTPSProxy); errors.Is(err, spec.ErrProxyCredentials) {
			errs = append(errs, fmt.Errorf("--agent-https-proxy: %w (every injected pod's spec would show it to anyone who can get pods): use an egress proxy that needs no credentials", err))
		} else if err != nil {
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
	errs = append(errs, o.validateResources()...)
	errs = append(errs, o.validateCache()...)
	return errors.Join(errs...)
}

// validateCache checks the cache options and derives the URL and the CA
// bundle the spec carries.
func (o *Options) validateCache() []error {
	var errs []error
	o.cacheURL, o.cacheCA = "", ""
	if o.CacheURL == "" {
		if len(o.CacheCA) > 0 {
			errs = append(errs, errors.New("--cache-ca-file needs --cache-url: it is the CA of the cache there"))
		}
		if o.CacheByDefault {
			errs = append(errs, errors.New("--cache-by-default needs --cache-url: there is no cache to use"))
		}
		return errs
	}
	if err := spec.ValidateQualifiedCacheURL(o.CacheURL); err != nil {
		errs = append(errs, fmt.Errorf("--cache-url: %w", err))
	}
	o.cacheURL = strings.TrimSuffix(o.CacheURL, "/")
	if len(o.CacheCA) == 0 {
		return append(errs, errors.New("--cache-url needs --cache-ca-file: the agent trusts the cache's certificate through that CA bundle alone"))
	}
	ca, err := normalCacheCA(o.CacheCA)
	if err != nil {
		return append(errs, fmt.Errorf("--cache-ca-file: %w", err))
	}
	o.cacheCA = ca
	return errs
}

// normalCacheCA parses a cache CA bundle and writes its certificates
// again as PEM, so that the spec carries no text the file had around them.
func normalCacheCA(pemBytes []byte) (string, error) {
	certs, err := spec.ParseCacheCA(pemBytes)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	// Written again, long lines become more: the bound holds for what the
	// spec carries.
	if _, err := spec.ParseCacheCA([]byte(b.String())); err != nil {
		return "", fmt.Errorf("as PEM of 64-character lines, %w", err)
	}
	return b.String(), nil
}

// WithCacheCA returns a copy of the validated options o that trusts
// another cache CA bundle, checked as Validate checks CacheCA; o is not
// changed. The webhook swaps the copy in when the bundle's file changes.
func (o *Options) WithCacheCA(pemBytes []byte) (*Options, error) {
	if o.cacheURL == "" {
		return nil, errors.New("--cache-ca-file needs --cache-url: it is the CA of the cache there")
	}
	ca, err := normalCacheCA(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("--cache-ca-file: %w", err)
	}
	c := *o
	c.CacheCA, c.cacheCA = bytes.Clone(pemBytes), ca
	return &c, nil
}

// WithCluster returns a copy of the validated options o that decides the
// auto delivery with what c says of the cluster; o is not changed.
func (o *Options) WithCluster(c Cluster) *Options {
	cp := *o
	c.OldKubelets = slices.Clone(c.OldKubelets)
	cp.Cluster = &c
	return &cp
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
