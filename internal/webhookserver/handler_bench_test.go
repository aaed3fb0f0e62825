package webhookserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

type staticSA map[string]string

func (a staticSA) GetServiceAccount(_ context.Context, namespace, name string) (webhook.ServiceAccount, error) {
	return webhook.ServiceAccount{Namespace: namespace, Name: name, Annotations: a}, nil
}

// BenchmarkPodHandler measures the handler alone, in process: decode the
// review and the pod, mutate, encode the patch and the response. HTTP and
// TLS are the admission benchmark's (test/bench/admission).
func BenchmarkPodHandler(b *testing.B) {
	pod := readPod(b, "../../webhook/testdata/mutate/multi-container.in.yaml")
	pod.Name, pod.Namespace, pod.GenerateName = "", "", "app-"
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	req := podRequestRaw("1", raw, "group1")
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: &req,
	})
	if err != nil {
		b.Fatal(err)
	}
	h := &PodHandler{Options: current(testOptions(b)), ServiceAccounts: staticSA{spec.SAAnnotationClientID: testClientID}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"patch"`)) {
			b.Fatalf("HTTP %d: %s", w.Code, w.Body.String())
		}
	}
}
