package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/kvinject/kvinject/credprovider"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// imageList is a repeatable, comma-separated --match-images flag.
type imageList []string

func (l *imageList) String() string { return strings.Join(*l, ",") }
func (l *imageList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// runCredentialProviderConfig is `kvinject credential-provider-config`:
// the kubelet's CredentialProviderConfig for kvinject-credential-provider.
func runCredentialProviderConfig(_ context.Context, args []string, io stdio) int {
	var o credprovider.ConfigOptions
	var images imageList
	fs := flag.NewFlagSet("kvinject credential-provider-config", flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintf(io.err, "Usage: kvinject credential-provider-config --match-images PATTERN[,PATTERN] [--tenant-id TENANT] [flags]\n"+
			"       kvinject credential-provider-config --node-identity CLIENT_ID --tenant-id TENANT --pull-secret PATTERN=REF [flags]\n\n"+
			"Prints the kubelet's CredentialProviderConfig (--image-credential-provider-config) for %s,\n"+
			"which pulls images with the registry credential in the Key Vault secret named by the pod's\n"+
			"ServiceAccount annotation %s, signing in with the pod's own ServiceAccount token (Kubernetes 1.34+,\nor 1.33 with a feature gate). Node mode (--node-identity) is for kubelets that send no token: every pod\non the node pulls the --pull-secret images as the node identity. Both can serve different images.\n\nFlags:\n",
			credprovider.Name, spec.SAAnnotationPullSecret)
		fs.PrintDefaults()
	}
	fs.Var(&images, "match-images", "images the kubelet asks the provider about: host[:port][/path], '*' globs in host labels (repeatable, comma-separated)")
	fs.StringVar(&o.TenantID, "tenant-id", "", "Entra ID tenant for ServiceAccounts without "+spec.SAAnnotationTenantID+" (default: none, every ServiceAccount that pulls carries it)")
	fs.StringVar(&o.DefaultVault, "default-vault", "", "vault name or URL that a short "+spec.SAAnnotationPullSecret+" reference reads from")
	fs.StringVar(&o.AuthorityHost, "authority-host", "", "Entra ID host, passed as "+spec.EnvAuthorityHost+" (default: the cloud's)")
	fs.StringVar(&o.HTTPSProxy, "https-proxy", "", "egress proxy for the provider alone, passed as HTTPS_PROXY (default: the kubelet's environment)")
	fs.StringVar(&o.NoProxy, "no-proxy", "", "hosts the provider reaches without the proxy, passed as NO_PROXY")
	fs.StringVar(&o.CAFile, "ca-file", "", "CA bundle on the node the provider trusts instead of the system's (e.g. a TLS-inspecting proxy's), passed as SSL_CERT_FILE")
	fs.DurationVar(&o.CacheDuration, "cache-duration", credprovider.DefaultCacheDuration, "how long the kubelet keeps a credential, per ServiceAccount and registry")
	o.Cloud = spec.PublicCloud()
	fs.Var(&o.Cloud, "cloud", spec.CloudUsage())
	node := credprovider.NodeConfig{CacheDuration: credprovider.DefaultNodeCacheDuration}
	var pullSecrets credprovider.PullSecretList
	fs.StringVar(&node.ClientID, "node-identity", "", "node mode, for kubelets that send no ServiceAccount token (before 1.34): the client id of the node identity that pulls the --pull-secret images for every pod on the node")
	fs.Var(&pullSecrets, "pull-secret", "node mode: PATTERN=REF, the Key Vault secret holding the credential for images matching PATTERN (repeatable; the patterns become the entry's matchImages)")
	fs.StringVar(&node.KubeletRootDir, "kubelet-root-dir", "", "node mode: the kubelet's --root-dir (default /var/lib/kubelet)")
	fs.StringVar(&node.NodeName, "node-name", "", "node mode: the node's name, where the kubelet runs with --hostname-override (default: the host name, lower case)")
	fs.StringVar(&node.TokenVolume, "node-token-volume", "", "node mode: the DaemonSet pod's projected token volume (default "+credprovider.DefaultNodeTokenVolume+")")
	fs.StringVar(&node.TokenSubject, "node-token-subject", "", "node mode: the DaemonSet's ServiceAccount as a subject (default "+credprovider.DefaultNodeTokenSubject+")")
	fs.DurationVar(&node.CacheDuration, "node-cache-duration", credprovider.DefaultNodeCacheDuration, "node mode: how long the kubelet keeps a credential per registry, at most the token's remaining lifetime")
	kubeVersion := fs.String("kube-version", webhook.NewestKubeVersion, "the kubelet's Kubernetes version: 1.33 needs a feature gate and has no tokenAttributes.cacheType")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	var err error
	if o.KubeMinor, err = webhook.KubeMinor(*kubeVersion); err != nil {
		fmt.Fprintf(io.err, "kvinject credential-provider-config: --kube-version: %v\n", err)
		return 2
	}
	o.MatchImages = images
	if node.ClientID != "" || len(pullSecrets) > 0 {
		node.PullSecrets = pullSecrets
		o.Node = &node
	}
	if err := credprovider.WriteKubeletConfig(io.out, o); err != nil {
		fmt.Fprintf(io.err, "kvinject credential-provider-config: %v\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	return 0
}
