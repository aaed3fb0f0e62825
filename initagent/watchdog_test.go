package initagent

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

// stuckVault is a SecretGetter whose reads never return, whatever their
// context says: a step that cannot be interrupted.
type stuckVault struct{ release chan struct{} }

func (v stuckVault) GetSecret(context.Context, string, string) (keyvault.Secret, error) {
	<-v.release
	return keyvault.Secret{}, errors.New("released")
}

func newStuckAgent(t *testing.T, errs *syncbuf.Buffer) *Agent {
	t.Helper()
	dir := t.TempDir()
	v := stuckVault{release: make(chan struct{})}
	t.Cleanup(func() { close(v.release) })
	a, err := New(Options{Spec: mustSpec(t, dir, secretFile("username", "0400", "app-pgsql#username")), Err: errs,
		Logger: testLogger(&syncbuf.Buffer{}), Timeout: 500 * time.Millisecond,
		NewGetter: func(string) (keyvault.Getter, error) { return v, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRunStuckStep: a step that never returns makes the agent fail at its
// time limit (plus the grace a step has to return on its own), with one
// problem line naming the step, and nothing written.
func TestRunStuckStep(t *testing.T) {
	var errs syncbuf.Buffer
	a := newStuckAgent(t, &errs)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Run: %v, want ErrFailed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of a 500ms time limit")
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 500*time.Millisecond+4*time.Second {
		t.Errorf("Run returned after %v, want the time limit plus the 2s grace", d)
	}
	want := "error: the agent's time limit of 500ms ran out while reading the secrets, and that step did not stop. Fix: the process exits rather than run on"
	if !strings.HasPrefix(errs.String(), want) || strings.Count(errs.String(), "\n") != 1 {
		t.Errorf("stderr:\n%s\nwant one line starting %q", errs.String(), want)
	}
	if e, _ := os.ReadDir(a.o.Dir); len(e) != 0 {
		t.Errorf("files written: %v", e)
	}
}

// TestRefreshStuckStep: a refresh step that never returns ends the loop at
// the refresh's time limit with the problem line and ErrFailed (the
// process exits and the kubelet restarts the sidecar), rather than leave
// the step spinning beside the next cycles.
func TestRefreshStuckStep(t *testing.T) {
	var errs syncbuf.Buffer
	a := newStuckAgent(t, &errs)
	done := make(chan error, 1)
	go func() { done <- a.Refresh(context.Background(), time.Second) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Refresh: %v, want ErrFailed", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Refresh still running 15s after a 500ms time limit")
	}
	want := "error: the refresh's time limit of 500ms ran out while reading the secrets, and that step did not stop."
	if !strings.HasPrefix(errs.String(), want) {
		t.Errorf("stderr:\n%s\nwant a line starting %q", errs.String(), want)
	}
}
