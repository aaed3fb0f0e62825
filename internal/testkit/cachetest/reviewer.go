// Package cachetest holds what tests of the kvinject cache share: a
// TokenReview answer without an API server.
package cachetest

import (
	"context"
	"sync"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// The user extra keys the API server sets for a pod-bound token.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// Reviewer authenticates tokens as the API server would those of running
// pods: by their unverified claims, for the exchange audience only. Set
// overrides the answer for one token; SetError fails every review.
type Reviewer struct {
	mu       sync.Mutex
	statuses map[string]authenticationv1.TokenReviewStatus
	err      error
	reviews  int
}

// Reviews is the number of reviews asked so far.
func (r *Reviewer) Reviews() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reviews
}

// NewReviewer returns a Reviewer with no overrides.
func NewReviewer() *Reviewer {
	return &Reviewer{statuses: map[string]authenticationv1.TokenReviewStatus{}}
}

// Set makes Review answer st for token.
func (r *Reviewer) Set(token string, st authenticationv1.TokenReviewStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[token] = st
}

// SetError makes every Review fail with err, as when the API server cannot
// be reached; nil restores the answers.
func (r *Reviewer) SetError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Review answers as the API server would.
func (r *Reviewer) Review(_ context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reviews++
	if r.err != nil {
		return authenticationv1.TokenReviewStatus{}, r.err
	}
	if st, ok := r.statuses[token]; ok {
		return st, nil
	}
	c, err := keyvault.ParseTokenClaims(token)
	if err != nil || len(c.Audience) != 1 || c.Audience[0] != spec.TokenAudience {
		return authenticationv1.TokenReviewStatus{Error: "[invalid bearer token, token lookup failed]"}, nil
	}
	return authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{spec.TokenAudience},
		User: authenticationv1.UserInfo{Username: c.Subject, Extra: map[string]authenticationv1.ExtraValue{
			ExtraPodName: {"web-7d9f-abcde"}, ExtraPodUID: {"0d1e2f3a-0000-4000-8000-000000000001"},
		}},
	}, nil
}
