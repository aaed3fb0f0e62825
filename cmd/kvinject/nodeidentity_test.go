package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestNodeIdentity: the DaemonSet's container lives until it is told to
// stop, and takes no arguments.
func TestNodeIdentity(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var errOut bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- runNodeIdentity(ctx, nil, stdio{err: &errOut}) }()
	select {
	case code := <-done:
		t.Fatalf("exited %d before SIGTERM", code)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if code := <-done; code != 0 || !strings.Contains(errOut.String(), "exits on SIGTERM") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
	if code := runNodeIdentity(context.Background(), []string{"--token"}, stdio{err: &errOut}); code != 2 {
		t.Errorf("with an argument: exit %d, want 2", code)
	}
}
