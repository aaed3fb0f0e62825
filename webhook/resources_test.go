package webhook

import (
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The resource flags set the injected containers' requirements and the bounds; Validate refuses
// a request above its limit and a non-positive value, naming the flag.
func TestResourceFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		check   func(t *testing.T, o *Options)
		wantErr []string
	}{{
		name: "set",
		args: []string{"--agent-cpu-request=20m", "--agent-memory-limit=96Mi", "--refresh-cpu-limit=200m", "--max-injected-cpu=2", "--max-injected-memory=1Gi"},
		check: func(t *testing.T, o *Options) {
			want := DefaultOptions().AgentResources
			want.Requests[corev1.ResourceCPU] = resource.MustParse("20m")
			want.Limits[corev1.ResourceMemory] = resource.MustParse("96Mi")
			if diff := cmp.Diff(want, o.AgentResources); diff != "" {
				t.Errorf("agent resources (-want +got):\n%s", diff)
			}
			if got := o.RefreshResources.Limits[corev1.ResourceCPU]; got.String() != "200m" {
				t.Errorf("refresh cpu limit %s", got.String())
			}
			if o.MaxInjectedCPU.String() != "2" || o.MaxInjectedMemory.String() != "1Gi" {
				t.Errorf("bounds %s %s", o.MaxInjectedCPU.String(), o.MaxInjectedMemory.String())
			}
		},
	}, {
		name:    "request above limit, zero",
		args:    []string{"--agent-memory-request=128Mi", "--refresh-cpu-request=0"},
		wantErr: []string{"the agent's resources: the memory request 128Mi is above the limit 64Mi", "--refresh-cpu-request: 0 must be positive"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			o.AgentImage = "kvinject:test"
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			for _, f := range ResourceFlags(o) {
				fs.Func(f.Name, f.Usage, func(v string) error { return f.Set(&o, v) })
			}
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			o.Complete()
			err := o.Validate()
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, &o)
			}
		})
	}
}
