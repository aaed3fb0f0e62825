package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// refreshSample is what the kvinject-refresh sidecar (the agent with
// --refresh) costs for the reference pod on one link.
type refreshSample struct {
	link link
	// first is the first refresh after start: sign-in (token exchange) and
	// a first TLS connection. steady is a later one: the access token is
	// reused, the connection is new (idle connections are closed between
	// refreshes) but resumes its TLS session.
	first, steady sample
	// Between two refreshes: the process's resident memory, and how often
	// its threads were scheduled (voluntary and involuntary context
	// switches) in idle.
	rssKiB, anonKiB, hwmKiB int64
	wakeups                 int64
	idle                    time.Duration
}

// runRefresh starts the agent in refresh mode on files the agent has just
// written, lets it refresh three times on link l, and measures the second
// and third refresh's traffic and the idle time between them.
func (b *bench) runRefresh(l link, interval time.Duration) (refreshSample, error) {
	rs := refreshSample{link: l}
	dir, err := os.MkdirTemp(benchkit.TmpfsDir(), "refresh-files-")
	if err != nil {
		return rs, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		return rs, err
	}
	raw, err := specFor(0, true)
	if err != nil {
		return rs, err
	}
	env := append(slices.Clone(b.env), spec.EnvSpec+"="+raw)
	agent := func(args ...string) *exec.Cmd {
		cmd := exec.Command(b.agentBin, append([]string{"--dir", dir, "--termination-log", filepath.Join(b.tmp, "no-termination-log")}, args...)...)
		cmd.Env = env
		return cmd
	}
	// kvinject-agent first, as in the pod.
	if out, err := agent().CombinedOutput(); err != nil {
		return rs, fmt.Errorf("agent: %v\n%s", err, benchkit.LastLines(string(out), 5))
	}

	b.Emulator.SetKnobs(azemu.Knobs{RequestLatency: l.Latency, ConnLatency: l.Latency, BandwidthBPS: l.BPS})
	defer b.Emulator.SetKnobs(azemu.Knobs{})
	b.Emulator.ResetStats()
	cmd := agent("--refresh", interval.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return rs, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	pid := cmd.Process.Pid

	// A refresh is over when Key Vault has answered and no byte has
	// moved for a while (the client closes its connection right after).
	deadline := time.Now().Add(4 * interval)
	settled := func(gets int64) (sample, error) {
		last, quietSince := int64(-1), time.Now()
		for time.Now().Before(deadline) {
			s := b.collect()
			moved := s.WireUp + s.WireDown
			if moved != last {
				last, quietSince = moved, time.Now()
			} else if s.Classes[azemu.ClassKVGet] >= gets && time.Since(quietSince) > 500*time.Millisecond {
				return s, nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return sample{}, fmt.Errorf("refresh %d did not happen within %v; stderr:\n%s", gets, 4*interval, benchkit.LastLines(stderr.String(), 5))
	}
	first, err := settled(1)
	if err != nil {
		return rs, err
	}
	second, err := settled(2)
	if err != nil {
		return rs, err
	}
	// Idle: from just after this refresh until well before the next one
	// (the timer restarts when a refresh ends, at 90% of the interval at
	// the earliest).
	before, err := contextSwitches(pid)
	if err != nil {
		return rs, err
	}
	t0 := time.Now()
	time.Sleep(interval * 7 / 10)
	after, err := contextSwitches(pid)
	if err != nil {
		return rs, err
	}
	rs.idle, rs.wakeups = time.Since(t0), after-before
	mem, _ := benchkit.ReadProcStatus(pid) // zeros if it has ended, which the report counts as missed
	rs.rssKiB, rs.anonKiB, rs.hwmKiB = mem.RSS, mem.Anon, mem.HWM
	third, err := settled(3)
	if err != nil {
		return rs, err
	}
	rs.first, rs.steady = first, diff(third, second)
	if got := readFile(filepath.Join(dir, "password")); !strings.Contains(pgsqlValue, got) || got == "" {
		return rs, fmt.Errorf("the files changed during the refreshes")
	}
	return rs, nil
}

// diff is b's counters minus a's.
func diff(b, a sample) sample {
	d := benchkit.Traffic{Requests: b.Requests - a.Requests, Conns: b.Conns - a.Conns, WireUp: b.WireUp - a.WireUp,
		WireDown: b.WireDown - a.WireDown, BodyUp: b.BodyUp - a.BodyUp, BodyDown: b.BodyDown - a.BodyDown,
		TokensIssued: b.TokensIssued - a.TokensIssued, Classes: map[azemu.Class]int64{}}
	for c, n := range b.Classes {
		d.Classes[c] = n - a.Classes[c]
	}
	return sample{Traffic: d}
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of pid: each is a time the thread ran.
func contextSwitches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n, nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
