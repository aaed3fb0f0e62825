package webhook

import (
	"flag"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/internal/spec"
)

// TestOptionsFromFlags: the flags reach what Mutate uses through Complete;
// Validate reports and changes nothing.
func TestOptionsFromFlags(t *testing.T) {
	o := DefaultOptions()
	fs := flag.NewFlagSet("kvinject webhook", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--agent-image=kvinject:test", "--cloud=AzureChinaCloud", "--default-vault=homelab-kv",
		"--authority-host=https://login.example.cn", "--cache-ca-file=/etc/kvinject/cache-ca.crt"}); err != nil {
		t.Fatal(err)
	}
	if o.KubeVersion != "" || o.EnvDelivery != spec.DeliveryAuto {
		t.Errorf("before Complete: kube version %q, env delivery %q", o.KubeVersion, o.EnvDelivery)
	}
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Cloud.Name != "AzureChinaCloud" || o.defaultVault != "https://homelab-kv.vault.azure.cn" ||
		o.authorityHost != "https://login.example.cn/" || o.KubeVersion != NewestKubeVersion || o.CacheCAFile != "/etc/kvinject/cache-ca.crt" {
		t.Errorf("completed: cloud %s, vault %q, authority %q, kube version %q, cache CA file %q",
			o.Cloud.Name, o.defaultVault, o.authorityHost, o.KubeVersion, o.CacheCAFile)
	}

	// Validate only reads: a field set after Complete is reported, and
	// what Complete derived stays until Complete runs again.
	o.AuthorityHost, o.DefaultVault = "https://", "-"
	err := o.Validate()
	for _, want := range []string{"--authority-host", "--default-vault"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to name %s", err, want)
		}
	}
	if o.authorityHost != "https://login.example.cn/" || o.defaultVault != "https://homelab-kv.vault.azure.cn" {
		t.Errorf("Validate changed the derived options: authority %q, vault %q", o.authorityHost, o.defaultVault)
	}
}
