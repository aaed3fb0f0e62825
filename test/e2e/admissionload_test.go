//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dryRunPod creates an opted-in pod of the reference reader in ns as a
// server-side dry run (the webhooks run, nothing is stored) and returns it
// as admitted.
func dryRunPod(ctx context.Context, ns string) (*corev1.Pod, error) {
	tmpl := dbreader(ns, "dry-run", 1).Spec.Template
	p := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	p.GenerateName = "dry-run-"
	return cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// admissionLoad admits a dry-run opted-in pod (dryRunPod) at a steady pace
// until stopped, counting the pods admitted with the agent, the refusals
// and the pods admitted without it: what a change to the webhook (a
// rollout, a new certificate) must keep at zero refused and zero without.
type admissionLoad struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	counts admissionCounts
}

type admissionCounts struct {
	total, refused, uninjected int
	firstRefusal               error
}

func (c admissionCounts) String() string {
	return fmt.Sprintf("%d dry-run pods admitted, %d refused (first: %v), %d without the agent", c.total, c.refused, c.firstRefusal, c.uninjected)
}

// check fails the test unless at least min pods were admitted during what,
// none refused and none without the agent.
func (c admissionCounts) check(t *testing.T, what string, min int) {
	t.Helper()
	if c.total < min {
		t.Errorf("only %d pods admitted during %s, want at least %d", c.total, what, min)
	}
	if c.refused != 0 || c.uninjected != 0 {
		t.Errorf("during %s: %s; want none refused and none without the agent", what, c)
	}
}

// startAdmissionLoad admits one pod in ns every interval.
func startAdmissionLoad(ns string, interval time.Duration) *admissionLoad {
	ctx, cancel := context.WithCancel(context.Background())
	a := &admissionLoad{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p, err := dryRunPod(ctx, ns)
			if err != nil && ctx.Err() != nil {
				return // stopped during the call: not a refusal
			}
			a.mu.Lock()
			a.counts.total++
			switch {
			case err != nil:
				a.counts.refused++
				if a.counts.firstRefusal == nil {
					a.counts.firstRefusal = err
				}
			case agentCount(*p) != 1:
				a.counts.uninjected++
			}
			a.mu.Unlock()
		}
	}()
	return a
}

// stop ends the load and returns its counts.
func (a *admissionLoad) stop() admissionCounts {
	a.cancel()
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts
}
