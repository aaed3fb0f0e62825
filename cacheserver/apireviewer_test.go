package cacheserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

// TestAPITokenReviewer asks a real kube-apiserver: a pod's bound token for
// the exchange audience is accepted; the same pod's token for another
// audience, garbage and the token of a deleted pod are refused, each with
// its reason.
func TestAPITokenReviewer(t *testing.T) {
	cfg := k8stest.Start(t, &envtest.Environment{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "default"
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1"},
		Spec: corev1.PodSpec{ServiceAccountName: "web", AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokenFor := func(audience string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "web", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	podToken := tokenFor(spec.TokenAudience)
	otherAudience := tokenFor("https://kubernetes.default.svc")

	reviewer, err := NewAPITokenReviewer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review := func(token string) (caller, string) {
		st, err := reviewer.Review(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		c, ref := proveCaller(st, token, time.Now())
		if ref != nil {
			return c, ref.reason
		}
		return c, ""
	}
	type outcome struct {
		Subject, Pod, Reason string
	}
	tests := []struct {
		name  string
		token string
		want  outcome
	}{
		{"the pod's token", podToken, outcome{Subject: "system:serviceaccount:default:web", Pod: "web-1"}},
		{"another audience", otherAudience, outcome{Reason: reasonWrongAudience}},
		{"garbage", "garbage", outcome{Reason: reasonNotAJWT}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, reason := review(tt.token)
			if diff := cmp.Diff(tt.want, outcome{Subject: c.Subject, Pod: c.Pod, Reason: reason}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("deleted pod", func(t *testing.T) {
		if err := cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("the pod was not deleted")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The API server caches a successful token authentication for 10 s:
		// the deleted pod's token is refused once that entry ends.
		reason := ""
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if _, reason = review(podToken); reason != "" {
				break
			}
		}
		if diff := cmp.Diff(reasonPodGone, reason); diff != "" {
			t.Errorf("reason (-want +got):\n%s", diff)
		}
	})
}

// TestAPITokenReviewerNotThrottled: the reviewer does not wait on
// client-go's default rate limit (5 a second after a burst of 10), which
// made a rollout's pods past the tenth wait for their reviews.
func TestAPITokenReviewerNotThrottled(t *testing.T) {
	var reviews atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		tr, ok := obj.(*authenticationv1.TokenReview)
		if err != nil || !ok || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.Error(w, fmt.Sprintf("%s: not a TokenReview: %v", r.URL.Path, err), http.StatusBadRequest)
			return
		}
		reviews.Add(1)
		tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(tr)
	}))
	defer api.Close()
	cfg := &rest.Config{Host: api.URL}
	reviewer, err := NewAPITokenReviewer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS != 0 {
		t.Errorf("NewAPITokenReviewer changed the caller's config: QPS %v", cfg.QPS)
	}
	// Throttled, 40 reviews take 6 s at least.
	const n = 40
	start := time.Now()
	for range n {
		st, err := reviewer.Review(context.Background(), "token")
		if err != nil || !st.Authenticated {
			t.Fatalf("review: %v, authenticated %v", err, st.Authenticated)
		}
	}
	if got := time.Since(start); got > 3*time.Second {
		t.Errorf("%d reviews took %v: throttled on the client side", n, got)
	}
	if got := reviews.Load(); got != n {
		t.Errorf("the API server answered %d reviews, want %d", got, n)
	}
}
