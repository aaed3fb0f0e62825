package initagent

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
)

// stepGrace is how long past its deadline a step may take to return on its
// own. A step that honours its context (every request to Azure or the cache)
// returns at once and words its own problem; one that cannot be interrupted
// (a CPU-bound parse, a hung filesystem) is abandoned after this.
const stepGrace = 2 * time.Second

// StuckError is a step of a run that had not returned stepGrace after the
// run's time limit.
type StuckError struct {
	Step  string
	Limit time.Duration
}

func (e *StuckError) Error() string {
	return fmt.Sprintf("the time limit of %v ran out while %s, and that step did not stop", e.Limit, e.Step)
}

// problem words e for the agent's or the sidecar's problem line.
func (e *StuckError) problem(who string) keyvault.Problem {
	return keyvault.Problem{
		Cause: fmt.Sprintf("%s's time limit of %v ran out while %s, and that step did not stop", who, e.Limit, e.Step),
		Fix: "the process exits rather than run on: if the node was only slow, raise --timeout; " +
			"otherwise look at what the step works on (a certificate bundle, a template) in the secrets this pod reads",
	}
}

// stepTracker holds the name of the step a run is in, for the watchdog.
type stepTracker struct{ name atomic.Pointer[string] }

func (s *stepTracker) enter(name string) { s.name.Store(&name) }

func (s *stepTracker) current() string {
	if p := s.name.Load(); p != nil {
		return *p
	}
	return "starting"
}

// watch runs body on its own goroutine and returns its error; when ctx
// ends and body has not returned stepGrace later, it returns a *StuckError
// naming the step body is in, and leaves body running. Go cannot stop a
// goroutine: the caller must end the process, which is what frees the CPU.
func watch(ctx context.Context, steps *stepTracker, limit time.Duration, body func() error) error {
	done := make(chan error, 1) // buffered: an abandoned body still finishes its send
	go func() { done <- body() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	grace := time.NewTimer(stepGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		return err
	case <-grace.C:
		return &StuckError{Step: steps.current(), Limit: limit}
	}
}
