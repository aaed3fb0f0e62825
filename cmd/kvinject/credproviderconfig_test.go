package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/testkit/golden"
)

func TestCredentialProviderConfig(t *testing.T) {
	base := []string{"credential-provider-config", "--match-images", "mirror.example.com:5000,*.azurecr.io", "--tenant-id", "11111111-2222-3333-4444-555555555555"}
	tests := []struct {
		name     string
		extra    []string
		wantCode int
		wantErr  string
	}{
		{name: "newest", extra: []string{"--default-vault", "homelab-kv"}},
		{name: "1.34", extra: []string{"--kube-version", "v1.34.2", "--cache-duration", "10m", "--match-images", "ghcr.example.org/team-a"}},
		{name: "1.33", extra: []string{"--kube-version", "1.33"}},
		{name: "china cloud and authority host", extra: []string{"--cloud", "AzureChinaCloud", "--default-vault", "https://homelab-kv.vault.azure.cn", "--authority-host", "https://login.chinacloudapi.cn/"}},
		{name: "egress proxy", extra: []string{"--https-proxy", "http://proxy.internal:3128", "--no-proxy", ".svc,10.0.0.0/8", "--ca-file", "/etc/pki/proxy-ca.pem"}},
		{name: "bad egress", extra: []string{"--https-proxy", "proxy.internal:3128", "--ca-file", "proxy-ca.pem"}, wantCode: 2,
			wantErr: `kvinject credential-provider-config: --https-proxy: must be an http:// or https:// URL with a host, like http://proxy.internal:3128; --ca-file "proxy-ca.pem": an absolute path on the node` + "\n"},
		{name: "1.32", extra: []string{"--kube-version", "1.32"}, wantCode: 2,
			wantErr: "kvinject credential-provider-config: the kubelet passes ServiceAccount tokens to credential providers from Kubernetes 1.33, not 1.32: use node mode (--node-identity and --pull-secret)\n"},
		{name: "bad flags", extra: []string{"--match-images", "https://r.example.com", "--default-vault", "x", "--cache-duration", "-1s"}, wantCode: 2,
			wantErr: `kvinject credential-provider-config: --match-images: "https://r.example.com": no scheme, just host[:port][/path]; --default-vault: vault name "x" is not valid: 3-24 letters, digits and hyphens, starting with a letter; --cache-duration -1s is negative` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCommand(t, "", append(append([]string{}, base...), tt.extra...)...)
			if code != tt.wantCode || errOut != tt.wantErr {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if tt.wantCode != 0 {
				return
			}
			golden.Check(t, "testdata/credential-provider-config/"+strings.ReplaceAll(tt.name, " ", "-")+".yaml", []byte(out))
			checkKubeletConfig(t, out, tt.name != "1.33")
		})
	}
	if code, _, errOut := runCommand(t, "", "credential-provider-config", "--tenant-id", "11111111-2222-3333-4444-555555555555"); code != 2 || !strings.Contains(errOut, "--match-images: at least one image pattern") {
		t.Errorf("no --match-images: exit %d, %q", code, errOut)
	}
	// Without --tenant-id every ServiceAccount that pulls names its tenant.
	code, out, errOut := runCommand(t, "", "credential-provider-config", "--match-images", "127.0.0.1:5000")
	if code != 0 || strings.Contains(out, "--tenant-id") {
		t.Errorf("no --tenant-id: exit %d, %q\n%s", code, errOut, out)
	}
	checkKubeletConfig(t, out, true)
}

// checkKubeletConfig decodes the output strictly into the kubelet's own
// v1 type, as the kubelet does, and checks what its validation requires
// (pkg/credentialprovider/plugin validateCredentialProviderConfig).
func checkKubeletConfig(t *testing.T, out string, wantCacheType bool) {
	t.Helper()
	var c kubeletconfigv1.CredentialProviderConfig
	if err := yaml.UnmarshalStrict([]byte(out), &c); err != nil {
		t.Fatalf("the kubelet's type does not decode the config: %v", err)
	}
	if c.APIVersion != "kubelet.config.k8s.io/v1" || c.Kind != "CredentialProviderConfig" || len(c.Providers) != 1 {
		t.Fatalf("apiVersion %q kind %q, %d providers", c.APIVersion, c.Kind, len(c.Providers))
	}
	p := c.Providers[0]
	ta := p.TokenAttributes
	switch {
	case p.Name != "kvinject-credential-provider" || p.APIVersion != "credentialprovider.kubelet.k8s.io/v1":
		t.Errorf("name %q apiVersion %q", p.Name, p.APIVersion)
	case len(p.MatchImages) == 0 || p.DefaultCacheDuration == nil:
		t.Error("matchImages and defaultCacheDuration are required")
	case ta == nil || ta.ServiceAccountTokenAudience != "api://AzureADTokenExchange" || ta.RequireServiceAccount == nil || !*ta.RequireServiceAccount:
		t.Errorf("tokenAttributes %+v", ta)
	case wantCacheType != (ta.CacheType == kubeletconfigv1.ServiceAccountServiceAccountTokenCacheType):
		t.Errorf("cacheType %q", ta.CacheType)
	}
}

// TestCredentialProviderConfigNodeMode: node mode alone (1.29 to 1.33, the
// gate off), beside pod-token mode (two entries, two names), and its
// refusals.
func TestCredentialProviderConfigNodeMode(t *testing.T) {
	node := []string{"credential-provider-config", "--node-identity", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "--tenant-id", "11111111-2222-3333-4444-555555555555",
		"--default-vault", "homelab-kv", "--pull-secret", "mirror.example.com:5000=mirror-registry-creds"}
	tests := []struct {
		name      string
		extra     []string
		wantNames []string
		wantCode  int
		wantErr   string
	}{
		{name: "node 1.33", extra: []string{"--kube-version", "1.33"}, wantNames: []string{"kvinject-credential-provider"}},
		{name: "node 1.29 own kubelet", extra: []string{"--kube-version", "1.29", "--kubelet-root-dir", "/var/data/kubelet", "--node-name", "worker-1",
			"--node-cache-duration", "30m", "--pull-secret", "*.azurecr.io=https://team-kv.vault.azure.net/secrets/acr-pull#password"}, wantNames: []string{"kvinject-credential-provider"}},
		{name: "both modes 1.34", extra: []string{"--kube-version", "1.34", "--match-images", "ghcr.example.org"}, wantNames: []string{"kvinject-credential-provider", "kvinject-credential-provider-node"}},
		{name: "pod mode on 1.32 beside node mode", extra: []string{"--kube-version", "1.32", "--match-images", "ghcr.example.org"}, wantCode: 2,
			wantErr: "kvinject credential-provider-config: the kubelet passes ServiceAccount tokens to credential providers from Kubernetes 1.33, not 1.32\n"},
		{name: "bad node flags", extra: []string{"--node-identity", "x", "--kubelet-root-dir", "kubelet", "--node-cache-duration", "0s", "--pull-secret", "https://r.example.com=a b"}, wantCode: 2,
			wantErr: `kvinject credential-provider-config: --node-cache-duration 0s: positive (the token's remaining lifetime caps it); node identity client id: "x" is not a GUID (8-4-4-4-12 hexadecimal digits); pull secret pattern "https://r.example.com": no scheme, just host[:port][/path]; pull secret: reference "a b": secret name "a b" is not valid: 1-127 letters, digits and hyphens; kubelet root dir "kubelet": an absolute path` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCommand(t, "", append(append([]string{}, node...), tt.extra...)...)
			if code != tt.wantCode || errOut != tt.wantErr {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if tt.wantCode != 0 {
				return
			}
			golden.Check(t, "testdata/credential-provider-config/"+strings.ReplaceAll(tt.name, " ", "-")+".yaml", []byte(out))
			var c kubeletconfigv1.CredentialProviderConfig
			if err := yaml.UnmarshalStrict([]byte(out), &c); err != nil {
				t.Fatalf("the kubelet's type does not decode the config: %v", err)
			}
			var names []string
			for _, p := range c.Providers {
				names = append(names, p.Name)
				if p.Name == "kvinject-credential-provider" && len(c.Providers) == 2 {
					continue // pod-token mode's entry, checked above
				}
				// The kubelet refuses tokenAttributes with the gate off.
				if p.TokenAttributes != nil || len(p.MatchImages) == 0 || p.DefaultCacheDuration == nil || !slices.Contains(p.Args, "--node-identity=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee") ||
					!slices.Contains(p.Args, "--match-images="+strings.Join(p.MatchImages, ",")) {
					t.Errorf("node entry %+v", p)
				}
			}
			if diff := cmp.Diff(tt.wantNames, names); diff != "" {
				t.Errorf("providers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCredentialProviderConfigProxyPassword: a proxy password would be
// written into a file on every node; the command refuses it, and neither
// its output nor its error repeats it.
func TestCredentialProviderConfigProxyPassword(t *testing.T) {
	modes := map[string][]string{
		"pod-token mode": {"--match-images", "mirror.example.com"},
		"node mode": {"--node-identity", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "--tenant-id", "11111111-2222-3333-4444-555555555555",
			"--kube-version", "1.33", "--pull-secret", "mirror.example.com=https://homelab-kv.vault.azure.net/secrets/mirror-creds"},
	}
	for mode, flags := range modes {
		for _, proxy := range []string{"http://puller:s3cr3t-pw@proxy.internal:3128", "puller:s3cr3t-pw@proxy.internal:3128"} {
			args := append(append([]string{"credential-provider-config"}, flags...), "--https-proxy", proxy)
			code, out, errOut := runCommand(t, "", args...)
			want := "kvinject credential-provider-config: --https-proxy: must not carry a user or password"
			if code != 2 || !strings.HasPrefix(errOut, want) {
				t.Errorf("%s, %q: exit %d, stderr %q; want 2 and %q", mode, proxy, code, errOut, want)
			}
			if strings.Contains(out+errOut, "s3cr3t-pw") {
				t.Errorf("%s, %q: the password is repeated:\n%s%s", mode, proxy, out, errOut)
			}
		}
	}
}
