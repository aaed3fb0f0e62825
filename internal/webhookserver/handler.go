package webhookserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync/atomic"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	sigsjson "sigs.k8s.io/json"

	"github.com/kvinject/kvinject/webhook"
)

// MutatePath is where the webhook serves the pod mutation.
const MutatePath = "/mutate-v1-pod"

// maxReviewBytes bounds a request body: the API server's own limit on an
// object is 3 MiB, and the review wraps it.
const maxReviewBytes = 7 << 20

// ServiceAccountGetter returns a pod's ServiceAccount. A ServiceAccount that
// does not exist is returned empty, not as an error: the pod's own
// annotations may still name the identity.
type ServiceAccountGetter interface {
	GetServiceAccount(ctx context.Context, namespace, name string) (webhook.ServiceAccount, error)
}

// PodHandler serves AdmissionReviews of pods (admission.k8s.io/v1).
type PodHandler struct {
	// Options are the validated mutation options, loaded once per request:
	// the cache CA's watcher swaps in a new copy when the CA file changes.
	Options         *atomic.Pointer[webhook.Options]
	ServiceAccounts ServiceAccountGetter
	// Counter, when not nil, counts results (NewInjectionsCounter).
	Counter *Counter
	// Log is the logger every request gets in its context.
	Log logr.Logger
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// review is the part of an admission.k8s.io/v1 AdmissionReview the handler
// reads: decoding only these fields skips the old object, the user's
// identity and the rest.
type review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *request `json:"request"`
}

type request struct {
	UID         types.UID                   `json:"uid"`
	Resource    metav1.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource"`
	Namespace   string                      `json:"namespace"`
	Operation   admissionv1.Operation       `json:"operation"`
	DryRun      *bool                       `json:"dryRun"`
	Object      json.RawMessage             `json:"object"`
}

// ServeHTTP decodes one AdmissionReview and answers it. Malformed requests
// get an HTTP error; everything the API server sends gets a review.
func (h *PodHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Log
	ctx := logr.NewContext(r.Context(), log)
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("read request: %v", err), http.StatusRequestEntityTooLarge)
		return
	}
	var review review
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "the body is not an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		http.Error(w, fmt.Sprintf("AdmissionReview %s is not supported: want %s", review.APIVersion, admissionv1.SchemeGroupVersion), http.StatusBadRequest)
		return
	}
	resp := h.admit(ctx, review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: review.APIVersion, Kind: review.Kind},
		Response: resp,
	})
	if err != nil {
		log.Error(err, "encode the response")
		http.Error(w, "encode the response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(out); err != nil {
		log.V(1).Info("write the response", "error", err.Error())
	}
}

// admit decides one request and counts the result.
func (h *PodHandler) admit(ctx context.Context, req *request) (resp *admissionv1.AdmissionResponse) {
	defer func() {
		if p := recover(); p != nil {
			logr.FromContextOrDiscard(ctx).Error(fmt.Errorf("panic: %v", p), "admission failed", "namespace", req.Namespace)
			resp = errored(http.StatusInternalServerError, errors.New("kvinject: internal error"))
		}
		// A dry run has no side effects, not even on metrics.
		if h.Counter != nil && (req.DryRun == nil || !*req.DryRun) && req.Operation == admissionv1.Create {
			h.Counter.count(resp)
		}
	}()
	if req.Operation != admissionv1.Create || req.Resource != podResource || req.SubResource != "" {
		// The webhook configuration only sends pod creations.
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(req.Object, &pod); err != nil {
		return errored(http.StatusBadRequest, fmt.Errorf("decode the pod: %w", err))
	}
	return h.mutate(ctx, req, &pod)
}

func (h *PodHandler) mutate(ctx context.Context, req *request, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	log := logr.FromContextOrDiscard(ctx)
	// Pods of a Deployment arrive without a namespace (and a name): the
	// request has it.
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	sa, err := h.ServiceAccounts.GetServiceAccount(ctx, ns, saName)
	if err != nil {
		log.Error(err, "ServiceAccount lookup failed", "namespace", ns, "serviceAccount", saName)
		return errored(http.StatusInternalServerError, fmt.Errorf("get service account %q: %w", ns+"/"+saName, err))
	}
	o := h.Options.Load()
	adm, err := webhook.Admit(pod, sa, o)
	var d *webhook.Denial
	switch {
	case errors.As(err, &d):
		log.Info("denied", "namespace", ns, "generateName", pod.GenerateName, "name", pod.Name, "problems", len(d.Problems))
		return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: d.Error(),
		}}
	case err != nil:
		log.Error(err, "mutation failed", "namespace", ns)
		return errored(http.StatusInternalServerError, err)
	}
	ops, warnings := adm.Patch, adm.Warnings
	if len(ops) == 0 {
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: warnings}
	}
	patch, err := webhook.EncodePatch(ops)
	if err != nil {
		return errored(http.StatusInternalServerError, fmt.Errorf("encode the patch: %w", err))
	}
	log.V(1).Info("injected", "namespace", ns, "generateName", pod.GenerateName, "name", pod.Name, "operations", len(ops))
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt, Patch: patch, Warnings: warnings}
}

func errored(code int32, err error) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: err.Error(),
	}}
}
