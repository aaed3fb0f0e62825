package preview

import (
	"bytes"
	"os"
	"testing"

	"github.com/kvinject/kvinject/webhook"
)

func testOptions(t testing.TB) Options {
	t.Helper()
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.TenantID = "11111111-2222-3333-4444-555555555555"
	o.DefaultVault = "homelab-kv"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return Options{Mutation: &o, Namespace: "ns",
		ServiceAccountAnnotations: map[string]string{"azure.workload.identity/client-id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}}
}

// TestPreviewIsStable: the preview of a preview is the same text, as the
// webhook's patch of an injected pod is empty.
func TestPreviewIsStable(t *testing.T) {
	for _, in := range []string{"../../cmd/kvinject/testdata/inject/workloads.yaml", "../../cmd/kvinject/testdata/inject/init-containers.yaml"} {
		doc, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var once, twice, errOut bytes.Buffer
		if err := Preview(bytes.NewReader(doc), &once, &errOut, testOptions(t)); err != nil {
			t.Fatalf("%s: %v: %s", in, err, errOut.String())
		}
		if err := Preview(bytes.NewReader(once.Bytes()), &twice, &errOut, testOptions(t)); err != nil {
			t.Fatalf("%s again: %v: %s", in, err, errOut.String())
		}
		if once.String() != twice.String() {
			t.Errorf("%s: previewing the preview changes it", in)
		}
	}
}

// FuzzPreview feeds arbitrary YAML to `kvinject inject`'s reader: errors and
// denials are fine, panics are not, and what it prints previews again.
func FuzzPreview(f *testing.F) {
	for _, name := range []string{"db-example", "multi-container", "openshift-scc", "cache-on"} {
		b, err := os.ReadFile("../../webhook/testdata/mutate/" + name + ".in.yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("kind: Deployment\nspec:\n  template: 3\n---\nkind: CronJob\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		o := testOptions(t)
		var out, errOut bytes.Buffer
		if err := Preview(bytes.NewReader(doc), &out, &errOut, o); err != nil {
			return
		}
		var again bytes.Buffer
		if err := Preview(bytes.NewReader(out.Bytes()), &again, &errOut, o); err != nil {
			t.Fatalf("the preview's own output does not preview again: %v", err)
		}
	})
}
