// Command floor is the admission benchmark's baseline: the least a pod
// mutating webhook can do. It serves HTTPS with net/http and crypto/tls,
// decodes the AdmissionReview and the Pod with encoding/json into the
// Kubernetes API types, and answers with a one-operation JSONPatch that adds
// an annotation. No framework, no API server, no metrics.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:19443", "listen address")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/mutate-v1-pod", mutate)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.ListenAndServeTLS(filepath.Join(*certDir, "tls.crt"), filepath.Join(*certDir, "tls.key"))
	if err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// patch adds kvinject.io/status: injected; the benchmark's pods have annotations.
var patch = []byte(`[{"op":"add","path":"/metadata/annotations/kvinject.io~1status","value":"injected"}]`)

func mutate(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 7<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, "bad Pod", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if pod.Annotations["kvinject.io/status"] != "injected" {
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType, resp.Patch = &pt, patch
	}
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}
