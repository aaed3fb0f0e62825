package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
)

// checkPatch proves the property the admission path rests on: applying
// Patch's operations to the raw pod gives exactly what Mutate makes of the
// typed pod, and the operations only add what kvinject owns.
func checkPatch(t testing.TB, pod *corev1.Pod, sa ServiceAccount, o *Options) {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	checkRawPatch(t, raw, sa, o)
}

// checkRawPatch is checkPatch for a pod given as the API server's JSON. It
// returns the patched JSON, or nil when the pod is denied.
func checkRawPatch(t testing.TB, raw []byte, sa ServiceAccount, o *Options) []byte {
	t.Helper()
	var pod corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &pod); err != nil {
		t.Fatalf("decode: %v", err)
	}
	ops, perr := Patch(pod.DeepCopy(), sa, o)
	typed := pod.DeepCopy()
	merr := Mutate(typed, sa, o)
	if (perr == nil) != (merr == nil) {
		t.Fatalf("Patch says %v, Mutate says %v", perr, merr)
	}
	if perr != nil {
		var d *Denial
		if !errors.As(perr, &d) {
			t.Fatalf("Patch: %v", perr)
		}
		return nil
	}
	for _, op := range ops {
		if !ownedPath(op.Operation, op.Path) {
			t.Errorf("operation %s %s touches what kvinject does not own", op.Operation, op.Path)
		}
		if strings.HasSuffix(op.Path, "/command") {
			if cmd, ok := op.Value.([]string); !ok || len(cmd) == 0 || cmd[0] != spec.ExecCommand {
				t.Errorf("operation %s %s sets a command that is not the exec wrapper: %v", op.Operation, op.Path, op.Value)
			}
		}
		// A probe or the process namespace is kvinject's only with kvinject.io/on-change.
		if (strings.HasSuffix(op.Path, "/livenessProbe") || op.Path == "/spec/shareProcessNamespace") && pod.Annotations[spec.AnnotationOnChange] == "" {
			t.Errorf("operation %s %s without %s", op.Operation, op.Path, spec.AnnotationOnChange)
		}
		// An env entry is kvinject's only when the pod's annotations hand
		// its variable over (kvinject.io/env-<VAR>).
		if strings.Contains(op.Path, "/env") {
			entries, ok := op.Value.([]corev1.EnvVar)
			if e, one := op.Value.(corev1.EnvVar); one {
				entries, ok = []corev1.EnvVar{e}, true
			}
			for _, e := range entries {
				ok = ok && pod.Annotations[spec.AnnotationEnvPrefix+e.Name] != ""
			}
			if !ok {
				t.Errorf("operation %s %s sets an env entry no kvinject.io/env- annotation names: %v", op.Operation, op.Path, op.Value)
			}
		}
	}
	patchJSON, err := EncodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	var ours, std []any
	if err := json.Unmarshal(patchJSON, &ours); err != nil {
		t.Fatalf("EncodePatch wrote %s: %v", patchJSON, err)
	}
	if b, err := json.Marshal(ops); err != nil || json.Unmarshal(b, &std) != nil {
		t.Fatalf("json.Marshal of the operations: %v", err)
	}
	if diff := cmp.Diff(std, ours, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("EncodePatch differs from json.Marshal (-json.Marshal +EncodePatch):\n%s", diff)
	}
	p, err := jsonpatchapply.DecodePatch(patchJSON)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply %s: %v", patchJSON, err)
	}
	var got corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(patched, &got); err != nil {
		t.Fatalf("decode the patched pod: %v", err)
	}
	if diff := cmp.Diff(typed, &got); diff != "" {
		t.Fatalf("patched raw pod differs from the typed mutation (-typed +patched):\n%s\npatch: %s", diff, patchJSON)
	}
	return patched
}

// ownedPath says whether a patch operation stays within what kvinject owns:
// additions anywhere it adds, replacements and removals of its own elements
// only (removal: its init container moved back to the front).
func ownedPath(op, path string) bool {
	switch op {
	case "add":
		return path == "/metadata/annotations" || strings.HasPrefix(path, "/metadata/annotations/") ||
			strings.HasPrefix(path, "/spec/volumes") || strings.HasPrefix(path, "/spec/initContainers") ||
			strings.HasSuffix(path, "/volumeMounts") || strings.HasSuffix(path, "/volumeMounts/-") ||
			strings.HasSuffix(path, "/env") || strings.HasSuffix(path, "/env/-") ||
			// a command the exec wrapper takes over (checked by checkRawPatch)
			strings.HasSuffix(path, "/command") ||
			// kvinject.io/on-change (checked by checkRawPatch)
			strings.HasSuffix(path, "/livenessProbe") || path == "/spec/shareProcessNamespace"
	case "replace":
		return strings.HasPrefix(path, "/spec/volumes/") || strings.HasPrefix(path, "/spec/initContainers/") ||
			strings.Contains(path, "/volumeMounts/") || strings.Contains(path, "/env/")
	case "remove":
		return strings.HasPrefix(path, "/spec/volumes/") || strings.HasPrefix(path, "/spec/initContainers/") ||
			strings.Contains(path, "/volumeMounts/")
	}
	return false
}

// TestPatchKeepsUnknownFields: a pod from a newer API server carries fields
// this build does not know; admission must keep every one of them.
func TestPatchKeepsUnknownFields(t *testing.T) {
	raw := []byte(`{
	  "apiVersion": "v1", "kind": "Pod",
	  "metadata": {"generateName": "app-", "labels": {"kvinject.io/inject": "true"},
	    "annotations": {"kvinject.io/secret-password": "app-pgsql#password"}, "futureMeta": 1},
	  "spec": {
	    "serviceAccountName": "dbreader",
	    "futurePodField": {"a": [1, 2]},
	    "initContainers": [{"name": "migrate", "image": "m", "futureContainerField": true,
	      "volumeMounts": [{"name": "data", "mountPath": "/data", "futureMountField": "x"}]}],
	    "containers": [{"name": "app", "image": "a", "futureContainerField": {"b": "c"},
	      "env": [{"name": "X", "value": "1", "futureEnvField": 2}]}],
	    "volumes": [{"name": "data", "emptyDir": {}, "futureVolumeField": "y"}]
	  },
	  "status": {"futureStatus": "z"}
	}`)
	patched := checkRawPatch(t, raw, testSA("group1", "dbreader"), testOptions(t))
	if patched == nil {
		t.Fatal("denied")
	}
	var before, after map[string]any
	if err := json.Unmarshal(raw, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(patched, &after); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"metadata.futureMeta", "spec.futurePodField", "status.futureStatus",
		"spec.containers.0.futureContainerField", "spec.containers.0.env.0.futureEnvField",
		"spec.initContainers.1.futureContainerField", "spec.initContainers.1.volumeMounts.0.futureMountField",
		"spec.volumes.0.futureVolumeField",
	} {
		beforePath := strings.Replace(path, "initContainers.1", "initContainers.0", 1)
		if diff := cmp.Diff(lookup(before, beforePath), lookup(after, path)); diff != "" || lookup(after, path) == nil {
			t.Errorf("%s not kept (-before +after):\n%s", path, diff)
		}
	}
}

func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i := 0
			for _, c := range k {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// TestPatchReinvocation: an injected pod whose init containers another
// webhook changed afterwards converges with the fewest operations.
func TestPatchReinvocation(t *testing.T) {
	sa := testSA("group1", "dbreader")
	injected := readPod(t, "testdata/mutate/db-example.in.yaml")
	if err := Mutate(injected, sa, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	other := corev1.Container{Name: "istio-init", Image: "proxy"}
	tests := []struct {
		name    string
		change  func(p *corev1.Pod)
		wantOps int
	}{
		{"unchanged", func(*corev1.Pod) {}, 0},
		{"init container put before the agent", func(p *corev1.Pod) {
			p.Spec.InitContainers = append([]corev1.Container{other}, p.Spec.InitContainers...)
		}, 2},
		{"init container appended", func(p *corev1.Pod) {
			p.Spec.InitContainers = append(p.Spec.InitContainers, other)
		}, 0},
		{"agent changed in place", func(p *corev1.Pod) { p.Spec.InitContainers[0].Image = "old" }, 1},
		{"mount removed", func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts = nil }, 1},
		{"status annotation gone", func(p *corev1.Pod) { delete(p.Annotations, spec.AnnotationStatus) }, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := injected.DeepCopy()
			tc.change(pod)
			ops, err := Patch(pod.DeepCopy(), sa, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ops) != tc.wantOps {
				t.Errorf("%d operations, want %d: %v", len(ops), tc.wantOps, ops)
			}
			checkPatch(t, pod, sa, testOptions(t))
		})
	}
}

// FuzzPatch runs the patch property over arbitrary pod JSON, seeded with
// the golden corpus: whatever the API server could send, the patch and the
// typed mutation agree, and the patch touches only what kvinject owns.
func FuzzPatch(f *testing.F) {
	ins, err := filepath.Glob("testdata/mutate/*.in.yaml")
	if err != nil || len(ins) == 0 {
		f.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		raw, err := yaml.YAMLToJSON(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	o := testOptions(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The API server always sends a pod with metadata and spec objects.
		var shape struct {
			Metadata map[string]json.RawMessage `json:"metadata"`
			Spec     map[string]json.RawMessage `json:"spec"`
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &shape); err != nil || shape.Metadata == nil || shape.Spec == nil {
			return
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &corev1.Pod{}); err != nil {
			return // not a pod
		}
		checkRawPatch(t, raw, testSA("ns", "app"), o)
	})
}

// TestTemplateCache: a cached parse gives what a fresh one does, errors
// included, and a caller's changes to its refs do not reach the cache.
func TestTemplateCache(t *testing.T) {
	c := newTemplateCache()
	cloud, err := spec.LookupCloud(spec.DefaultCloud)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{`u={{ secret "db#user" }}`, `{{ nope }}`, `{{ secret "a" }}{{ secret "b#c" }}`} {
		wantRefs, wantErr := spec.ParseTemplate(text, "https://kv.vault.azure.net", cloud)
		for range 2 {
			refs, err := c.parse(text, "https://kv.vault.azure.net", cloud)
			if diff := cmp.Diff(wantRefs, refs); diff != "" || (err == nil) != (wantErr == nil) {
				t.Fatalf("%q: refs (-fresh +cached):\n%s\nerr %v, fresh %v", text, diff, err, wantErr)
			}
			for k := range refs {
				delete(refs, k)
			}
		}
	}
	if len(c.entries) != 3 {
		t.Errorf("%d entries, want 3", len(c.entries))
	}
	for i := range templateCacheEntries + 1 {
		_, _ = c.parse(strings.Repeat("x", i), "v", cloud)
	}
	if len(c.entries) > templateCacheEntries {
		t.Errorf("%d entries, above the bound %d", len(c.entries), templateCacheEntries)
	}
}
