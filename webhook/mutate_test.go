package webhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/golden"
)

const (
	testTenant   = "11111111-2222-3333-4444-555555555555"
	testClientID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

const testCacheURL = "https://kvinject-cache.kvinject-system.svc.cluster.local."

// testOptions are the tests' options: a cluster with a cache, which pods
// use only when they say so.
func testOptions(t testing.TB) *Options {
	t.Helper()
	o := DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.TenantID = testTenant
	o.DefaultVault = "homelab-kv"
	o.CacheURL = testCacheURL
	o.CacheCA = testCacheCA(t)
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

// testCacheCA is the cache CA of the golden files, a comment before its block.
func testCacheCA(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/cache-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenOptions change testOptions for the golden cases named.
var goldenOptions = map[string]func(*Options){
	"cache-by-default":      func(o *Options) { o.CacheByDefault = true },
	"cache-off":             func(o *Options) { o.CacheByDefault = true },
	"env-exec":              func(o *Options) { o.EnvDelivery = spec.DeliveryExec },
	"onchange-restart-exec": func(o *Options) { o.EnvDelivery = spec.DeliveryExec },
	"resources": func(o *Options) {
		o.MaxInjectedCPU, o.MaxInjectedMemory = resource.MustParse("1"), resource.MustParse("256Mi")
	},
}

// goldenCaseOptions are the options of one golden case.
func goldenCaseOptions(t testing.TB, name string) *Options {
	t.Helper()
	o := testOptions(t)
	if change := goldenOptions[name]; change != nil {
		change(o)
		o.Complete()
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func testSA(ns, name string) ServiceAccount {
	return ServiceAccount{Namespace: ns, Name: name, Annotations: map[string]string{spec.SAAnnotationClientID: testClientID}}
}

func readPod(t testing.TB, path string) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &pod
}

func TestMutateGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/mutate/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			pod := readPod(t, in)
			ns := pod.Namespace
			if ns == "" {
				ns = "group1" // as the admission request would say
			}
			sa := testSA(ns, pod.Spec.ServiceAccountName)
			o := goldenCaseOptions(t, name)
			before := pod.DeepCopy()
			if err := Mutate(pod, sa, o); err != nil {
				t.Fatalf("Mutate: %v", err)
			}
			out, err := yaml.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, strings.TrimSuffix(in, ".in.yaml")+".out.yaml", out)

			checkInjected(t, pod)
			checkPatch(t, before, sa, o)

			// Mutating again (reinvocation) changes nothing.
			again := pod.DeepCopy()
			if err := Mutate(again, sa, o); err != nil {
				t.Fatalf("second Mutate: %v", err)
			}
			if diff := cmp.Diff(pod, again); diff != "" {
				t.Errorf("second mutation changed the pod (-first +second):\n%s", diff)
			}
			if ops, err := Patch(pod, sa, o); err != nil || len(ops) != 0 {
				t.Errorf("an injected pod patches %v (err %v)", ops, err)
			}
		})
	}
}

// checkInjected asserts what every injected pod must hold, whatever its input.
func checkInjected(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	if pod.Annotations[spec.AnnotationStatus] != spec.StatusInjected {
		t.Errorf("status annotation = %q", pod.Annotations[spec.AnnotationStatus])
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		if _, dup := vols[v.Name]; dup {
			t.Errorf("volume %q twice", v.Name)
		}
		vols[v.Name] = v
	}
	if v := vols[spec.SecretsVolumeName]; v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil {
		t.Errorf("secrets volume is not a size-limited memory emptyDir: %+v", v)
	}
	if v := vols[spec.TokenVolumeName]; v.Projected == nil || len(v.Projected.Sources) != 1 ||
		v.Projected.Sources[0].ServiceAccountToken == nil || v.Projected.Sources[0].ServiceAccountToken.Audience != spec.TokenAudience {
		t.Errorf("token volume is not a projected token for %s: %+v", spec.TokenAudience, v)
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != spec.AgentContainerName {
		t.Fatalf("agent is not the first init container")
	}
	names := map[string]bool{}
	for c := range allContainers(pod) {
		if names[c.Name] {
			t.Errorf("container %q twice", c.Name)
		}
		names[c.Name] = true
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %q mounts missing volume %q", c.Name, m.Name)
			}
			if m.Name == spec.TokenVolumeName && !contains(ownContainers, c.Name) {
				t.Errorf("container %q gets the agent's token", c.Name)
			}
			if m.Name == spec.SecretsVolumeName && !contains(ownContainers, c.Name) && !m.ReadOnly {
				t.Errorf("container %q mounts the secrets read-write", c.Name)
			}
		}
	}
	if len(pod.Spec.InitContainers) > 1 && pod.Spec.InitContainers[1].Name == spec.RefreshContainerName {
		r := pod.Spec.InitContainers[1]
		if r.RestartPolicy == nil || *r.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s is not a native sidecar (restartPolicy Always)", r.Name)
		}
		if diff := cmp.Diff(pod.Spec.InitContainers[0].SecurityContext, r.SecurityContext); diff != "" {
			t.Errorf("%s's securityContext differs from the agent's:\n%s", r.Name, diff)
		}
	}
	agent := pod.Spec.InitContainers[0]
	sc := agent.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.SeccompProfile == nil ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("agent securityContext does not pass Pod Security restricted: %+v", sc)
	}
	var specJSON string
	for _, e := range agent.Env {
		if e.Name == spec.EnvSpec {
			specJSON = e.Value
		}
	}
	s, err := spec.Decode([]byte(specJSON))
	if err != nil {
		t.Fatalf("agent's spec does not decode: %v", err)
	}
	for c := range allContainers(pod) {
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == spec.SecretsVolumeName && m.MountPath == s.MountPath)
		}
		// A target that only takes env variables mounts nothing, unless
		// the exec wrapper reads them from the env file.
		wrapped := len(c.Command) > 0 && c.Command[0] == spec.ExecCommand
		if want := contains(ownContainers, c.Name) || contains(s.Containers, c.Name) && len(s.Files) > 0 || wrapped; mounted != want {
			t.Errorf("container %q: secrets mounted = %v, want %v", c.Name, mounted, want)
		}
	}
}
