package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	authenticationv1 "k8s.io/api/authentication/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/kvinject/kvinject/internal/testkit/cachetest"
)

// tokenReviewPath is where client-go creates a TokenReview.
const tokenReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews"

// apiServer stands in for the API server the cache asks to review tokens:
// plain HTTP on loopback, answering TokenReview creates as the API server
// would for running pods (cachetest.Reviewer: by the token's claims, for
// the exchange audience only). The cache's side is the production client
// (cacheserver.APITokenReviewer over client-go); the API server's own work
// is not the cache's and is not counted.
type apiServer struct {
	srv        *http.Server
	reviewer   *cachetest.Reviewer
	kubeconfig string
	reviews    atomic.Int64

	mu      sync.Mutex
	unknown map[string]int // requests for anything else, by method and path
}

func startAPIServer(dir string) (*apiServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &apiServer{reviewer: cachetest.NewReviewer(), unknown: map[string]int{}}
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve)}
	go func() { _ = a.srv.Serve(ln) }()
	a.kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster:
    server: http://%s
users:
- name: kvinject-cache
  user:
    token: bench
contexts:
- name: stand-in
  context:
    cluster: stand-in
    user: kvinject-cache
current-context: stand-in
`, ln.Addr())
	if err := os.WriteFile(a.kubeconfig, []byte(kc), 0o600); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *apiServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != tokenReviewPath {
		a.mu.Lock()
		a.unknown[r.Method+" "+r.URL.Path]++
		a.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	// client-go sends protobuf (or JSON); the answer is JSON, which it accepts too.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	tr, ok := obj.(*authenticationv1.TokenReview)
	if err != nil || !ok {
		http.Error(w, fmt.Sprintf("not a TokenReview: %v", err), http.StatusBadRequest)
		return
	}
	st, err := a.reviewer.Review(r.Context(), tr.Spec.Token)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	a.reviews.Add(1)
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	tr.Status = st
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(tr)
}

// unknownPaths lists what the cache asked other than TokenReviews.
func (a *apiServer) unknownPaths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for k, n := range a.unknown {
		out = append(out, fmt.Sprintf("%s (%d)", k, n))
	}
	sort.Strings(out)
	return out
}

func (a *apiServer) close() { _ = a.srv.Close() }
