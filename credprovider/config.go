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
	// Node, when set, adds node mode for its patterns: a provider entry
	// without tokenAttributes (NodeName when MatchImages also has
	// pod-token mode's entry, else Name).
	Node *NodeConfig
}

// NodeProviderName is node mode's entry when both modes run on a node: the
// kubelet names a provider by its binary, so the binary is there under this
// name too (a link to kvinject-credential-provider).
const NodeProviderName = Name + "-node"

// DefaultNodeCacheDuration is node mode's --cache-duration: the provider
// answers with the token's remaining lifetime when shorter, so the kubelet
// asks once per registry and token lifetime on the node.
const DefaultNodeCacheDuration = time.Hour

// NodeConfig is node mode's part of the kubelet's config.
type NodeConfig struct {
	// ClientID is the node identity's (--node-identity).
	ClientID string
	// PullSecrets map image patterns to Key Vault secrets; the patterns
	// are the entry's matchImages.
	PullSecrets []NodePullSecret
	// KubeletRootDir, NodeName, TokenVolume and TokenSubject are passed
	// when set (the provider's defaults: /var/lib/kubelet, the host name,
	// kvinject-node-token, kvinject-system/kvinject-node-identity).
	KubeletRootDir, NodeName, TokenVolume, TokenSubject string
	// CacheDuration is the entry's --cache-duration and defaultCacheDuration.
	CacheDuration time.Duration
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
		o.Cloud = spec.PublicCloud()
	}
	if err := o.validate(); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The kubelet's --image-credential-provider-config for %s (Kubernetes 1.%d);\n", Name, o.KubeMinor)
	fmt.Fprintf(&b, "# the binary goes into --image-credential-provider-bin-dir.\n")
	if len(o.MatchImages) > 0 && o.KubeMinor < MinCacheTypeMinor {
		fmt.Fprintf(&b, "# Kubernetes 1.%d: the kubelet also needs --feature-gates=KubeletServiceAccountTokenForCredentialProviders=true.\n", o.KubeMinor)
	}
	if o.Node != nil {
		b.WriteString("# Node mode: every pod on the node can pull the images it matches, signing in as the node identity\n")
		b.WriteString("# with the token of the kvinject-node-identity DaemonSet's pod (manifests/node-identity).\n")
		if len(o.MatchImages) > 0 {
			fmt.Fprintf(&b, "# Both modes: link the binary as %s in the bin dir too.\n", NodeProviderName)
		}
	}
	b.WriteString("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n")
	if len(o.MatchImages) > 0 {
		writePodEntry(&b, o)
	}
	if o.Node != nil {
		writeNodeEntry(&b, o)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// q quotes a YAML scalar: a JSON string is a YAML double-quoted scalar.
func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// writeEnv writes the entry's env: the Entra ID host and the egress.
func writeEnv(b *strings.Builder, o ConfigOptions) {
	var env [][2]string
	for _, e := range [][2]string{{spec.EnvAuthorityHost, o.AuthorityHost}, {"HTTPS_PROXY", o.HTTPSProxy}, {"NO_PROXY", o.NoProxy}, {"SSL_CERT_FILE", o.CAFile}} {
		if e[1] != "" {
			env = append(env, e)
		}
	}
	if len(env) > 0 {
		b.WriteString("    env:\n")
		for _, e := range env {
			fmt.Fprintf(b, "      - name: %s\n        value: %s\n", e[0], q(e[1]))
		}
	}
}

// writeNodeEntry writes node mode's provider: no tokenAttributes (a kubelet
// whose gate is off refuses them), the patterns as matchImages.
func writeNodeEntry(b *strings.Builder, o ConfigOptions) {
	n := o.Node
	name := Name
	if len(o.MatchImages) > 0 {
		name = NodeProviderName
	}
	fmt.Fprintf(b, "  - name: %s\n", name)
	b.WriteString("    matchImages:\n")
	var patterns []string
	seen := map[string]bool{}
	for _, ps := range n.PullSecrets {
		if !seen[ps.Pattern] {
			seen[ps.Pattern] = true
			patterns = append(patterns, ps.Pattern)
			fmt.Fprintf(b, "      - %s\n", q(ps.Pattern))
		}
	}
	fmt.Fprintf(b, "    defaultCacheDuration: %s\n", q(n.CacheDuration.String()))
	fmt.Fprintf(b, "    apiVersion: %s\n", APIVersion)
	b.WriteString("    args:\n")
	arg := func(flag, v string) {
		if v != "" {
			fmt.Fprintf(b, "      - %s\n", q("--"+flag+"="+v))
		}
	}
	arg("node-identity", n.ClientID)
	arg("tenant-id", o.TenantID)
	arg("default-vault", o.DefaultVault)
	if o.Cloud.Name != spec.DefaultCloud {
		arg("cloud", o.Cloud.Name)
	}
	for _, ps := range n.PullSecrets {
		arg("pull-secret", ps.String())
	}
	arg("kubelet-root-dir", n.KubeletRootDir)
	arg("node-name", n.NodeName)
	arg("node-token-volume", n.TokenVolume)
	arg("node-token-subject", n.TokenSubject)
	arg("cache-duration", n.CacheDuration.String())
	arg("match-images", strings.Join(patterns, ","))
	writeEnv(b, o)
}

// writePodEntry writes pod-token mode's provider.
func writePodEntry(b *strings.Builder, o ConfigOptions) {
	fmt.Fprintf(b, "  - name: %s\n", Name)
	b.WriteString("    matchImages:\n")
	for _, m := range o.MatchImages {
		fmt.Fprintf(b, "      - %s\n", q(m))
	}
	fmt.Fprintf(b, "    defaultCacheDuration: %s\n", q(o.CacheDuration.String()))
	fmt.Fprintf(b, "    apiVersion: %s\n", APIVersion)
	b.WriteString("    args:\n")
	if o.TenantID != "" {
		fmt.Fprintf(b, "      - %s\n", q("--tenant-id="+o.TenantID))
	}
	if o.DefaultVault != "" {
		fmt.Fprintf(b, "      - %s\n", q("--default-vault="+o.DefaultVault))
	}
	if o.Cloud.Name != "" && o.Cloud.Name != spec.DefaultCloud {
		fmt.Fprintf(b, "      - %s\n", q("--cloud="+o.Cloud.Name))
	}
	fmt.Fprintf(b, "      - %s\n", q("--cache-duration="+o.CacheDuration.String()))
	fmt.Fprintf(b, "      - %s\n", q("--match-images="+strings.Join(o.MatchImages, ",")))
	writeEnv(b, o)
	b.WriteString("    tokenAttributes:\n")
	fmt.Fprintf(b, "      serviceAccountTokenAudience: %s\n", q(spec.TokenAudience))
	if o.KubeMinor >= MinCacheTypeMinor {
		b.WriteString("      cacheType: ServiceAccount\n")
	}
	b.WriteString("      requireServiceAccount: true\n")
	fmt.Fprintf(b, "      requiredServiceAccountAnnotationKeys:\n        - %s\n        - %s\n", spec.SAAnnotationClientID, spec.SAAnnotationPullSecret)
	fmt.Fprintf(b, "      optionalServiceAccountAnnotationKeys:\n        - %s\n", spec.SAAnnotationTenantID)
}

func (o ConfigOptions) validate() error {
	var errs []error
	if len(o.MatchImages) == 0 && o.Node == nil {
		errs = append(errs, errors.New("--match-images: at least one image pattern, like mirror.example.com:5000 or *.azurecr.io (or node mode's --node-identity and --pull-secret)"))
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
	if len(o.MatchImages) > 0 && o.KubeMinor < MinTokenMinor {
		fix := ""
		if o.Node == nil {
			fix = ": use node mode (--node-identity and --pull-secret)"
		}
		errs = append(errs, fmt.Errorf("the kubelet passes ServiceAccount tokens to credential providers from Kubernetes 1.%d, not 1.%d%s", MinTokenMinor, o.KubeMinor, fix))
	}
	if o.Node != nil {
		errs = append(errs, o.Node.validate(o)...)
	}
	return errors.Join(errs...)
}

// validate checks node mode's part with the provider's own rules, so that
// the kubelet never runs a provider that refuses its args.
func (n *NodeConfig) validate(o ConfigOptions) []error {
	var errs []error
	if n.CacheDuration <= 0 {
		errs = append(errs, fmt.Errorf("--node-cache-duration %v: positive (the token's remaining lifetime caps it)", n.CacheDuration))
	}
	name := n.NodeName
	if name == "" {
		name = "the host name" // known on the node only
	}
	no := NodeOptions{ClientID: n.ClientID, PullSecrets: append([]NodePullSecret(nil), n.PullSecrets...), Token: NodeTokenSource{
		RootDir: n.KubeletRootDir, Volume: n.TokenVolume, Subject: n.TokenSubject, NodeName: name}}
	vault := o.DefaultVault
	if v, err := spec.ParseVault(vault, o.Cloud); vault != "" && err == nil {
		vault = v
	}
	if err := no.validate(Options{TenantID: o.TenantID, DefaultVault: vault, Cloud: o.Cloud, Now: time.Now}); err != nil {
		errs = append(errs, err)
	}
	return errs
}
