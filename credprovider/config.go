package credprovider

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/spec"
)

// Name is the provider's name in the kubelet's CredentialProviderConfig,
// which is also its binary's name in --image-credential-provider-bin-dir.
const Name = "kvinject-credential-provider"

// Kubernetes minor versions of the kubelet's ServiceAccount token for
// credential providers (KubeletServiceAccountTokenForCredentialProviders).
const (
	// MinTokenMinor: alpha, off unless the feature gate is set.
	MinTokenMinor = 33
	// MinCacheTypeMinor: beta, on by default, and tokenAttributes.cacheType
	// is required; a kubelet before it refuses the field (its config
	// decoding is strict).
	MinCacheTypeMinor = 34
)

// ConfigOptions describe the kubelet's CredentialProviderConfig for this
// provider. WriteKubeletConfig validates them.
type ConfigOptions struct {
	// MatchImages are the images the kubelet asks the provider about:
	// host[:port][/path], '*' globs in host labels.
	MatchImages []string
	// TenantID, DefaultVault and Cloud become the provider's flags.
	TenantID, DefaultVault string
	Cloud                  spec.Cloud
	// AuthorityHost, when set, is passed as AZURE_AUTHORITY_HOST.
	AuthorityHost string
	// HTTPSProxy, NoProxy and CAFile, when set, are passed as HTTPS_PROXY,
	// NO_PROXY and SSL_CERT_FILE: egress for the provider alone, where the
	// kubelet's own environment has none (or should not).
	HTTPSProxy, NoProxy, CAFile string
	// CacheDuration is the provider's --cache-duration and the config's
	// defaultCacheDuration.
	CacheDuration time.Duration
	// KubeMinor is the kubelet's Kubernetes 1.x minor version.
	KubeMinor int
}

// WriteKubeletConfig writes the CredentialProviderConfig YAML the kubelet
// reads from --image-credential-provider-config.
//
// tokenAttributes: the audience Entra ID requires; the client id and the
// pull secret are required annotations, so the kubelet does not even run
// the provider for a ServiceAccount without them (its pods pull as before);
// the tenant is optional (--tenant-id stands in). cacheType is
// ServiceAccount: the credential depends on the ServiceAccount and its
// annotations only, not on the pod, so pods of one ServiceAccount share
// the kubelet's cache entry and the plugin runs once per ServiceAccount,
// registry and cache duration rather than once per pod ("Token").
func WriteKubeletConfig(w io.Writer, o ConfigOptions) error {
	if o.Cloud.Name == "" {
		o.Cloud, _ = spec.LookupCloud(spec.DefaultCloud)
	}
	if err := o.validate(); err != nil {
		return err
	}
	q := func(s string) string {
		b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
		return string(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The kubelet's --image-credential-provider-config for %s (Kubernetes 1.%d);\n", Name, o.KubeMinor)
	fmt.Fprintf(&b, "# the binary goes into --image-credential-provider-bin-dir.\n")
	if o.KubeMinor < MinCacheTypeMinor {
		fmt.Fprintf(&b, "# Kubernetes 1.%d: the kubelet also needs --feature-gates=KubeletServiceAccountTokenForCredentialProviders=true.\n", o.KubeMinor)
	}
	b.WriteString("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n")
	fmt.Fprintf(&b, "  - name: %s\n", Name)
	b.WriteString("    matchImages:\n")
	for _, m := range o.MatchImages {
		fmt.Fprintf(&b, "      - %s\n", q(m))
	}
	fmt.Fprintf(&b, "    defaultCacheDuration: %s\n", q(o.CacheDuration.String()))
	fmt.Fprintf(&b, "    apiVersion: %s\n", APIVersion)
	b.WriteString("    args:\n")
	if o.TenantID != "" {
		fmt.Fprintf(&b, "      - %s\n", q("--tenant-id="+o.TenantID))
	}
	if o.DefaultVault != "" {
		fmt.Fprintf(&b, "      - %s\n", q("--default-vault="+o.DefaultVault))
	}
	if o.Cloud.Name != "" && o.Cloud.Name != spec.DefaultCloud {
		fmt.Fprintf(&b, "      - %s\n", q("--cloud="+o.Cloud.Name))
	}
	fmt.Fprintf(&b, "      - %s\n", q("--cache-duration="+o.CacheDuration.String()))
	fmt.Fprintf(&b, "      - %s\n", q("--match-images="+strings.Join(o.MatchImages, ",")))
	var env [][2]string
	for _, e := range [][2]string{{spec.EnvAuthorityHost, o.AuthorityHost}, {"HTTPS_PROXY", o.HTTPSProxy}, {"NO_PROXY", o.NoProxy}, {"SSL_CERT_FILE", o.CAFile}} {
		if e[1] != "" {
			env = append(env, e)
		}
	}
	if len(env) > 0 {
		b.WriteString("    env:\n")
		for _, e := range env {
			fmt.Fprintf(&b, "      - name: %s\n        value: %s\n", e[0], q(e[1]))
		}
	}
	b.WriteString("    tokenAttributes:\n")
	fmt.Fprintf(&b, "      serviceAccountTokenAudience: %s\n", q(spec.TokenAudience))
	if o.KubeMinor >= MinCacheTypeMinor {
		b.WriteString("      cacheType: ServiceAccount\n")
	}
	b.WriteString("      requireServiceAccount: true\n")
	fmt.Fprintf(&b, "      requiredServiceAccountAnnotationKeys:\n        - %s\n        - %s\n", spec.SAAnnotationClientID, spec.SAAnnotationPullSecret)
	fmt.Fprintf(&b, "      optionalServiceAccountAnnotationKeys:\n        - %s\n", spec.SAAnnotationTenantID)
	_, err := io.WriteString(w, b.String())
	return err
}

func (o ConfigOptions) validate() error {
	var errs []error
	if len(o.MatchImages) == 0 {
		errs = append(errs, errors.New("--match-images: at least one image pattern, like mirror.example.com:5000 or *.azurecr.io"))
	}
	for _, m := range o.MatchImages {
		if _, err := ParseMatchImages([]string{m}); err != nil {
			errs = append(errs, fmt.Errorf("--match-images: %w", err))
		}
	}
	if o.TenantID != "" {
		if err := spec.ValidateTenantID(o.TenantID); err != nil {
			errs = append(errs, fmt.Errorf("--tenant-id: %w", err))
		}
	}
	if o.HTTPSProxy != "" {
		// Never quoted: it may hold a password.
		if err := spec.ValidateProxyURL(o.HTTPSProxy); errors.Is(err, spec.ErrProxyCredentials) {
			errs = append(errs, fmt.Errorf("--https-proxy: %w (the config is a file on every node, or a MachineConfig, that others read): "+
				"use an egress proxy that needs no credentials, or set HTTPS_PROXY in the kubelet's own environment", err))
		} else if err != nil {
			errs = append(errs, fmt.Errorf("--https-proxy: %w, like http://proxy.internal:3128", err))
		}
	}
	if o.CAFile != "" && !filepath.IsAbs(o.CAFile) {
		errs = append(errs, fmt.Errorf("--ca-file %q: an absolute path on the node", o.CAFile))
	}
	if o.DefaultVault != "" {
		if _, err := spec.ParseVault(o.DefaultVault, o.Cloud); err != nil {
			errs = append(errs, fmt.Errorf("--default-vault: %w", err))
		}
	}
	if o.CacheDuration < 0 {
		errs = append(errs, fmt.Errorf("--cache-duration %v is negative", o.CacheDuration))
	}
	if o.KubeMinor < MinTokenMinor {
		errs = append(errs, fmt.Errorf("the kubelet passes ServiceAccount tokens to credential providers from Kubernetes 1.%d, not 1.%d", MinTokenMinor, o.KubeMinor))
	}
	return errors.Join(errs...)
}
