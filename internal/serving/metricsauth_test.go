package serving

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

// fakeReviews knows token "reader" (user r, may get /metrics), "other"
// (user o, may not) and "broken" (the API server fails).
type fakeReviews struct {
	tokens, access atomic.Int32
	gotAccess      authorizationv1.NonResourceAttributes
}

func (f *fakeReviews) ReviewToken(_ context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	f.tokens.Add(1)
	switch token {
	case "reader":
		return authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "r"}}, nil
	case "other":
		return authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "o"}}, nil
	case "broken":
		return authenticationv1.TokenReviewStatus{}, errors.New("connection refused")
	}
	return authenticationv1.TokenReviewStatus{Error: "invalid token"}, nil
}

func (f *fakeReviews) ReviewAccess(_ context.Context, user authenticationv1.UserInfo, verb, path string) (authorizationv1.SubjectAccessReviewStatus, error) {
	f.access.Add(1)
	f.gotAccess = authorizationv1.NonResourceAttributes{Verb: verb, Path: path}
	return authorizationv1.SubjectAccessReviewStatus{Allowed: user.Username == "r" && verb == "get" && path == "/metrics"}, nil
}

func TestMetricsFilter(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
		reviews                  int32 // TokenReviews asked
	}{
		{"allowed", "GET", "/metrics", "Bearer reader", http.StatusOK, 1},
		{"scheme in lower case", "GET", "/metrics", "bearer reader", http.StatusOK, 1},
		{"no token", "GET", "/metrics", "", http.StatusUnauthorized, 0},
		{"basic auth", "GET", "/metrics", "Basic cmVhZGVyOng=", http.StatusUnauthorized, 0},
		{"invalid token", "GET", "/metrics", "Bearer nope", http.StatusUnauthorized, 1},
		{"not allowed", "GET", "/metrics", "Bearer other", http.StatusForbidden, 1},
		{"other verb", "POST", "/metrics", "Bearer reader", http.StatusForbidden, 1},
		{"other path", "GET", "/debug", "Bearer reader", http.StatusForbidden, 1},
		{"API server fails", "GET", "/metrics", "Bearer broken", http.StatusInternalServerError, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeReviews{}
			h, err := MetricsFilter(f)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time from the kept decision
				req := httptest.NewRequest(tc.method, tc.path, nil)
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != tc.want {
					t.Errorf("HTTP %d, want %d (%s)", rec.Code, tc.want, rec.Body)
				}
			}
			want := tc.reviews
			if tc.want == http.StatusInternalServerError {
				want = 2 // failures are not kept
			}
			if got := f.tokens.Load(); got != want {
				t.Errorf("%d TokenReviews for 2 requests, want %d", got, want)
			}
			if tc.want == http.StatusForbidden {
				if diff := cmp.Diff(authorizationv1.NonResourceAttributes{Verb: map[string]string{"GET": "get", "POST": "post"}[tc.method], Path: tc.path}, f.gotAccess); diff != "" {
					t.Errorf("SubjectAccessReview (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestMetricsFilterBoundsDecisions: the kept decisions never exceed their bound.
func TestMetricsFilterBoundsDecisions(t *testing.T) {
	f := &fakeReviews{}
	a := newMetricsAuth(f, logr.Discard())
	h := a.wrap(http.NotFoundHandler())
	for i := range metricsMaxDecisions + 10 {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Authorization", fmt.Sprintf("Bearer t%d", i))
		h.ServeHTTP(httptest.NewRecorder(), req)
		if n := len(a.decisions); n > metricsMaxDecisions {
			t.Fatalf("%d decisions kept, bound %d", n, metricsMaxDecisions)
		}
	}
	if got := f.tokens.Load(); got != metricsMaxDecisions+10 {
		t.Errorf("%d TokenReviews, want %d", got, metricsMaxDecisions+10)
	}
}

// TestMetricsFilterDecisionsExpire: an allowed caller is reviewed again
// after metricsAllowTTL, a refused one after metricsDenyTTL, not before.
func TestMetricsFilterDecisionsExpire(t *testing.T) {
	for _, tc := range []struct {
		token string
		ttl   time.Duration
	}{{"reader", metricsAllowTTL}, {"other", metricsDenyTTL}, {"nope", metricsDenyTTL}} {
		t.Run(tc.token, func(t *testing.T) {
			f := &fakeReviews{}
			a := newMetricsAuth(f, logr.Discard())
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			a.now = func() time.Time { return now }
			h := a.wrap(http.NotFoundHandler())
			for _, step := range []struct {
				after time.Duration
				want  int32
			}{{0, 1}, {tc.ttl - time.Second, 1}, {time.Second, 2}, {time.Second, 2}} {
				now = now.Add(step.after)
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Authorization", "Bearer "+tc.token)
				h.ServeHTTP(httptest.NewRecorder(), req)
				if got := f.tokens.Load(); got != step.want {
					t.Fatalf("%v later: %d TokenReviews, want %d", step.after, got, step.want)
				}
			}
		})
	}
}
