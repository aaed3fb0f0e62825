package cacheserver

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
)

// gatedReviewer holds every review until the gate opens, counting how many
// are in flight at once.
type gatedReviewer struct {
	next     TokenReviewer
	gate     chan struct{}
	in, most atomic.Int32
}

func (g *gatedReviewer) Review(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	n := g.in.Add(1)
	defer g.in.Add(-1)
	for {
		m := g.most.Load()
		if n <= m || g.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-g.gate
	return g.next.Review(ctx, token)
}

// TestReviewsBounded: callers with tokens to review never have more than
// MaxConcurrentReviews TokenReviews in flight; a caller that finds no slot
// within ReviewWait is refused with 503 and Retry-After, so that its agent
// goes to Azure directly.
func TestReviewsBounded(t *testing.T) {
	var gated *gatedReviewer
	env := newTestEnv(t, func(o *Options) {
		gated = &gatedReviewer{next: o.Reviewer, gate: make(chan struct{})}
		o.Reviewer, o.MaxConcurrentReviews, o.ReviewWait = gated, 2, 300*time.Millisecond
	})
	token := env.token(t, "web")
	answers := make(chan answer, 5)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { answers <- env.post(t, token, request("db-password")) })
	}
	// Two get a slot and wait at the gate; three give up after ReviewWait.
	busy := 0
	for range 3 {
		var a answer
		select {
		case a = <-answers:
		case <-time.After(10 * time.Second):
			close(gated.gate) // let the held reviews end
			t.Fatal("no caller was turned away: the reviews are not bounded")
		}
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
			t.Errorf("a caller without a slot: %d %q, want 503 with Retry-After", a.status, a.refusal)
		}
		busy++
	}
	close(gated.gate)
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("a caller with a slot: %d %q, want 200", a.status, a.refusal)
		}
	}
	if got := gated.most.Load(); got != 2 {
		t.Errorf("%d reviews in flight at most, want 2", got)
	}
	if got := env.refusals(reasonReviewBusy); got != float64(busy) {
		t.Errorf("%v review-busy refusals counted, want %d", got, busy)
	}
}
