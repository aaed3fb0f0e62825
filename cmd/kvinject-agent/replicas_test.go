package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/cacheserver"
	"github.com/kvinject/kvinject/internal/azemu"
)

// roundRobin is a Service in front of cache replicas: each new connection
// goes to the next backend.
type roundRobin struct {
	ln       net.Listener
	backends []string
	mu       sync.Mutex
	next     int
}

func startRoundRobin(t *testing.T, backends ...string) *roundRobin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rr := &roundRobin{ln: ln, backends: backends}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rr.mu.Lock()
			to := rr.backends[rr.next%len(rr.backends)]
			rr.next++
			rr.mu.Unlock()
			go func() {
				defer func() { _ = c.Close() }()
				b, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer func() { _ = b.Close() }()
				go func() { _, _ = io.Copy(b, c); _ = b.Close() }()
				_, _ = io.Copy(c, b)
			}()
		}
	}()
	return rr
}

// TestOutageColdReplica: during an outage, a pod whose connection lands on
// a cache replica that never read its secret asks again on a new
// connection and gets the stale value another replica holds, instead of
// reading Azure directly, which fails for as long as the outage lasts.
// (The e2e flake: one of two new pods in PodInitializing for minutes.)
func TestOutageColdReplica(t *testing.T) {
	h := newHarness(t)
	warm, cold := h.startCache(), h.startCache()
	if r := h.run(warm.with(contractSpec(t), false)); r.code != 0 {
		t.Fatalf("first pod through the warm replica: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	// Past the TTL, Azure failing for everyone: both replicas are cut off,
	// and the agent's own direct reads get 503s.
	for _, c := range []*cacheFixture{warm, cold} {
		c.offset.Store(int64(cacheserver.DefaultTTL + time.Minute))
		c.down.Store(true)
	}
	h.emu.SetKnobs(azemu.Knobs{FaultRate: 1, RateFaults: []azemu.Fault{{Kind: azemu.FaultUnavailable}}})
	rr := startRoundRobin(t, strings.TrimPrefix(cold.ts.URL, "https://"), strings.TrimPrefix(warm.ts.URL, "https://"))
	s := warm.with(contractSpec(t), false)
	s.Cache.URL = "https://" + rr.ln.Addr().String()
	r := h.run(s, "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("a new pod during the outage, its first connection on the cold replica: exit %d after %v, stderr:\n%s", r.code, r.elapsed, r.stderr)
	}
	if diff := cmp.Diff(map[string]string{"username": "0400 superman", "password": "0400 louiselane"}, h.files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	for _, want := range []string{`"msg":"asked the cache again on a new connection`, `"served":1`, `"fromCache":1,"stale":1`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the log lacks %s:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "reading it from Azure directly") {
		t.Errorf("the agent read Azure directly although a replica held the value:\n%s", r.stderr)
	}
}
