package selfcert

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCompleteThenValidate: Complete fills the defaults and the DNS names;
// Validate refuses options that were not completed, and changes nothing.
func TestCompleteThenValidate(t *testing.T) {
	o := DefaultOptions()
	o.SecretName, o.Namespace, o.CertDir, o.ClusterDomain = "kvinject-webhook-cert", "kvinject-system", "/certs", ""
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "options not completed") {
		t.Errorf("Validate before Complete = %v, want it refused", err)
	}
	if o.ClusterDomain != "" || o.DNSNames() != nil || o.Now != nil {
		t.Errorf("Validate changed the options: domain %q, names %v", o.ClusterDomain, o.DNSNames())
	}
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []string{"kvinject-webhook.kvinject-system.svc", "kvinject-webhook.kvinject-system.svc.cluster.local", "kvinject-webhook", "kvinject-webhook.kvinject-system"}
	if diff := cmp.Diff(want, o.DNSNames()); diff != "" || o.ClusterDomain != DefaultClusterDomain || o.Now == nil {
		t.Errorf("completed: domain %q, DNS names (-want +got):\n%s", o.ClusterDomain, diff)
	}
}
