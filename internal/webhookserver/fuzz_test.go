package webhookserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/kvinject/kvinject/internal/spec"
)

// FuzzHandler sends arbitrary bodies to the admission handler, as a broken
// or hostile client of the webhook's port could: it never panics, answers
// every well-formed review with that review's UID, a patch that decodes,
// and a bounded message.
func FuzzHandler(f *testing.F) {
	pod := `{"metadata":{"generateName":"app-","labels":{"kvinject.io/inject":"true"},"annotations":{"kvinject.io/secret-db":"app-pgsql#username"}},"spec":{"containers":[{"name":"app","image":"i"}]}}`
	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"version":"v1","kind":"Pod"},"resource":{"version":"v1","resource":"pods"},"namespace":"group1","operation":"CREATE","object":` + pod + `}}`
	f.Add([]byte(review))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2","object":{"metadata":{"labels":{"kvinject.io/inject":"true"},"annotations":{"kvinject.io/perms-x":"0777"}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u3","object":null}}`))
	f.Add([]byte(`{}`))
	h := &PodHandler{Options: current(testOptions(f)), ServiceAccounts: staticSA{spec.SAAnnotationClientID: testClientID}}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, r)
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("answering a %d-byte body took %v", len(body), took)
		}
		if w.Code != http.StatusOK {
			if w.Code != http.StatusBadRequest {
				t.Fatalf("HTTP %d for a body the handler could read", w.Code)
			}
			return
		}
		var in struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		_ = json.Unmarshal(body, &in)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("the answer is not an AdmissionReview: %v", err)
		}
		if string(out.Response.UID) != in.Request.UID {
			t.Fatalf("answer UID %q, request UID %q", out.Response.UID, in.Request.UID)
		}
		if out.Response.Patch != nil {
			var ops []jsonpatch.Operation
			if err := json.Unmarshal(out.Response.Patch, &ops); err != nil || len(ops) == 0 {
				t.Fatalf("patch does not decode to operations: %v", err)
			}
		}
		if res := out.Response.Result; res != nil && len(res.Message) > 16<<10 {
			t.Fatalf("a %d-byte message", len(res.Message))
		}
	})
}
