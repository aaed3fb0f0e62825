package webhookserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// serve posts an AdmissionReview to the real HTTP handler and returns its response.
func serve(t *testing.T, srv *httptest.Server, req admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Post(srv.URL+MutatePath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != req.UID {
		t.Fatalf("response %+v does not answer request %s", out.Response, req.UID)
	}
	return out.Response
}

func podRequest(t *testing.T, uid string, pod *corev1.Pod, namespace string) admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return podRequestRaw(uid, raw, namespace)
}

func podRequestRaw(uid string, raw []byte, namespace string) admissionv1.AdmissionRequest {
	return admissionv1.AdmissionRequest{
		UID:       types.UID(uid),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

func TestAdmissionHandler(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	// The cache has not seen the ServiceAccount yet; the API server has.
	live := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: "group1", Name: "dbreader", Annotations: map[string]string{
			spec.SAAnnotationClientID: testClientID,
		}},
	}).Build()
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()
	reg := prometheus.NewRegistry()
	counter, err := NewInjectionsCounter(reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(MutatePath, &PodHandler{
		Options: current(testOptions(t)), ServiceAccounts: ClusterServiceAccounts{Cache: empty, Live: live}, Counter: counter,
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()

	// A Deployment's pod: no name, no namespace.
	pod := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	pod.Name, pod.Namespace, pod.GenerateName = "", "", "dbreaderapp-"
	raw, _ := json.Marshal(pod)

	t.Run("injects", func(t *testing.T) {
		resp := serve(t, srv, podRequest(t, "1", pod, "group1"))
		if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("response %+v, want an allowed JSON patch", resp)
		}
		patch, err := jsonpatchapply.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := patch.Apply(raw)
		if err != nil {
			t.Fatal(err)
		}
		var got corev1.Pod
		if err := json.Unmarshal(patched, &got); err != nil {
			t.Fatal(err)
		}
		if got.Annotations[spec.AnnotationStatus] != spec.StatusInjected || len(got.Spec.InitContainers) == 0 ||
			got.Spec.InitContainers[0].Name != spec.AgentContainerName {
			t.Fatalf("patched pod is not injected: %+v", got)
		}
		if !strings.Contains(envOf(got.Spec.InitContainers[0], spec.EnvClientID), testClientID) {
			t.Errorf("client id from the ServiceAccount not used")
		}
		for _, op := range mustOps(t, resp.Patch) {
			if op["op"] == "remove" {
				t.Errorf("patch removes %v", op["path"])
			}
		}

		// Reinvocation: the admitted pod goes through again unchanged.
		resp = serve(t, srv, podRequest(t, "2", &got, "group1"))
		if !resp.Allowed || len(resp.Patch) != 0 {
			t.Errorf("second admission: allowed=%v patch=%s, want no patch", resp.Allowed, resp.Patch)
		}
	})

	t.Run("denies with the annotation named", func(t *testing.T) {
		bad := pod.DeepCopy()
		bad.Annotations["kvinject.io/secrets-password"] = "x"
		resp := serve(t, srv, podRequest(t, "3", bad, "group1"))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden ||
			!strings.Contains(resp.Result.Message, "kvinject.io/secrets-password: unknown annotation, did you mean kvinject.io/secret-password?") {
			t.Errorf("response %+v, want a 403 denial naming the annotation", resp)
		}
		if len(resp.Patch) != 0 {
			t.Errorf("a denial carries a patch")
		}
	})

	t.Run("dry run is admitted and not counted", func(t *testing.T) {
		before := testutil.ToFloat64(counter.vec.WithLabelValues(resultInjected))
		req := podRequest(t, "4", pod, "group1")
		req.DryRun = ptr.To(true)
		if resp := serve(t, srv, req); !resp.Allowed || len(resp.Patch) == 0 {
			t.Errorf("dry run: %+v", resp)
		}
		if after := testutil.ToFloat64(counter.vec.WithLabelValues(resultInjected)); after != before {
			t.Errorf("dry run counted: %v -> %v", before, after)
		}
	})

	t.Run("delete is skipped", func(t *testing.T) {
		req := podRequest(t, "5", pod, "group1")
		req.Operation = admissionv1.Delete
		req.OldObject, req.Object = req.Object, runtime.RawExtension{}
		if resp := serve(t, srv, req); !resp.Allowed || len(resp.Patch) != 0 {
			t.Errorf("delete: %+v", resp)
		}
	})

	for result, want := range map[string]float64{resultInjected: 1, resultUnchanged: 1, resultDenied: 1, resultError: 0} {
		if got := testutil.ToFloat64(counter.vec.WithLabelValues(result)); got != want {
			t.Errorf("kvinject_injections_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestServiceAccountLookupErrors(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	empty := fake.NewClientBuilder().WithScheme(scheme).Build()
	sas := ClusterServiceAccounts{Cache: empty, Live: empty}
	got, err := sas.GetServiceAccount(context.Background(), "ns", "missing")
	if err != nil || got.Name != "missing" || got.Annotations != nil {
		t.Errorf("missing ServiceAccount: %+v, %v; want empty, no error", got, err)
	}
}

const (
	testTenant   = "11111111-2222-3333-4444-555555555555"
	testClientID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

func testOptions(t testing.TB) *webhook.Options {
	t.Helper()
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.TenantID = testTenant
	o.DefaultVault = "homelab-kv"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

// current holds validated options as the webhook server does.
func current(o *webhook.Options) *atomic.Pointer[webhook.Options] {
	p := &atomic.Pointer[webhook.Options]{}
	p.Store(o)
	return p
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

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func mustOps(t *testing.T, patch []byte) []map[string]any {
	t.Helper()
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestAdmissionWarnings: a pod that asks for the cache on a cluster that
// runs none is admitted with a warning, on reinvocation too.
func TestAdmissionWarnings(t *testing.T) {
	h := &PodHandler{Options: current(testOptions(t)), ServiceAccounts: staticSA{spec.SAAnnotationClientID: testClientID}}
	pod := readPod(t, "../../webhook/testdata/mutate/cache-on.in.yaml")
	want := []string{`kvinject.io/cache: "true", but this cluster runs no kvinject cache (the webhook has no --cache-url): the pod reads from Azure directly`}
	resp := admitDirect(t, h, pod)
	if !resp.Allowed || len(resp.Patch) == 0 {
		t.Fatalf("response %+v, want an allowed patch", resp)
	}
	if diff := cmp.Diff(want, resp.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	injected := patchPod(t, pod, resp.Patch)
	if c := agentSpecOf(t, injected).Cache; c != nil {
		t.Errorf("the spec has a cache the cluster does not run: %+v", c)
	}
	again := admitDirect(t, h, injected)
	if diff := cmp.Diff(want, again.Warnings); diff != "" || len(again.Patch) != 0 {
		t.Errorf("reinvocation: patch %s, warnings (-want +got):\n%s", again.Patch, diff)
	}
	plain := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	if resp := admitDirect(t, h, plain); len(resp.Warnings) != 0 {
		t.Errorf("a pod without the annotation is warned: %v", resp.Warnings)
	}
}

// admitDirect answers one review of pod in namespace group1 through the
// handler, in process.
func admitDirect(t *testing.T, h *PodHandler, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	req := podRequest(t, "1", pod, "group1")
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: &req,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", w.Code, w.Body.String())
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("not a review: %v", err)
	}
	return out.Response
}

func patchPod(t *testing.T, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatchapply.DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func agentSpecOf(t *testing.T, pod *corev1.Pod) *spec.Spec {
	t.Helper()
	s, err := spec.Decode([]byte(envOf(pod.Spec.InitContainers[0], spec.EnvSpec)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
