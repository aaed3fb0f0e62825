package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// Scenarios of a rollout.
const (
	scDirect = "direct"
	scCold   = "cache, first rollout"
	scWarm   = "cache, second rollout"
)

// upstream is what the emulator counted: the traffic on the egress link.
type upstream = benchkit.Traffic

// rolloutSample is one rollout of every pod.
type rolloutSample struct {
	up       upstream
	wallMs   float64   // first agent's start to the last one's exit
	podMs    []float64 // each agent, exec to exit (the files are in place at exit)
	podCPUMs []float64 // each agent's user and system CPU time
	// cacheCPUMs is the cache replicas' CPU time over the rollout, and
	// requests the requests they answered (one per pod).
	cacheCPUMs float64
	requests   int64
	reviews    int64 // TokenReviews the replicas asked for
}

type podRun struct {
	ms, cpuMs float64
}

// cachedRollouts starts fresh replicas, rolls out through them twice (the
// second rollout within the TTL), and reads their memory at the end.
func (b *bench) cachedRollouts(l link) (cold, warm rolloutSample, mem []procMem, err error) {
	var caches []*child
	defer func() {
		for _, c := range caches {
			if e := c.stop(); e != nil && err == nil {
				err = e
			}
		}
	}()
	for range b.c.replicas {
		c, err := b.startChild()
		if err != nil {
			return cold, warm, nil, err
		}
		caches = append(caches, c)
	}
	if cold, err = b.rollout(l, caches); err != nil {
		return cold, warm, nil, fmt.Errorf("first rollout: %w; the first replica's log ends:\n%s", err, benchkit.LastLines(caches[0].logs.String(), 5))
	}
	if warm, err = b.rollout(l, caches); err != nil {
		return cold, warm, nil, fmt.Errorf("second rollout: %w; the first replica's log ends:\n%s", err, benchkit.LastLines(caches[0].logs.String(), 5))
	}
	for _, c := range caches {
		m, err := c.mem()
		if err != nil {
			return cold, warm, nil, err
		}
		mem = append(mem, m)
	}
	return cold, warm, mem, nil
}

// rollout starts every pod's agent, parallel at a time, pod i asking
// caches[i % len(caches)], or Azure directly without caches.
func (b *bench) rollout(l link, caches []*child) (rolloutSample, error) {
	var s rolloutSample
	b.Emulator.SetKnobs(azemu.Knobs{BandwidthBPS: l.BPS})
	defer b.Emulator.SetKnobs(azemu.Knobs{})
	b.Emulator.ResetStats()
	reviews := b.api.reviews.Load()
	cpu0, err := cacheCPU(caches)
	if err != nil {
		return s, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sem := make(chan struct{}, b.c.parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for i := range b.c.pods {
		sem <- struct{}{}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var c *child
			if len(caches) > 0 {
				c = caches[i%len(caches)]
			}
			p, err := b.runAgent(ctx, i, c)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("pod %d: %w", i, err)
					cancel()
				}
				return
			}
			s.podMs = append(s.podMs, p.ms)
			s.podCPUMs = append(s.podCPUMs, p.cpuMs)
		}()
	}
	wg.Wait()
	s.wallMs = float64(time.Since(start).Microseconds()) / 1000
	if firstErr != nil {
		return s, firstErr
	}
	s.up = benchkit.ReadTraffic(b.Emulator)
	cpu1, err := cacheCPU(caches)
	if err != nil {
		return s, err
	}
	s.cacheCPUMs = float64((cpu1 - cpu0).Microseconds()) / 1000
	s.reviews = b.api.reviews.Load() - reviews
	if len(caches) > 0 {
		s.requests = int64(b.c.pods)
	}
	return s, nil
}

func cacheCPU(caches []*child) (time.Duration, error) {
	var sum time.Duration
	for _, c := range caches {
		d, err := c.cpu()
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// runAgent runs pod i's agent (kvinject-agent with the init container's
// wiring) into a fresh tmpfs directory, through cache c when not nil.
func (b *bench) runAgent(ctx context.Context, i int, c *child) (podRun, error) {
	dir, err := os.MkdirTemp(benchkit.TmpfsDir(), "bench-cache-files-")
	if err != nil {
		return podRun{}, err
	}
	defer os.RemoveAll(dir)
	cacheURL := ""
	if c != nil {
		cacheURL = c.url
	}
	raw, err := b.specFor(cacheURL)
	if err != nil {
		return podRun{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.c.podTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.agentBin, "--dir", dir,
		"--termination-log", filepath.Join(b.tmp, "no-termination-log"), "--timeout", b.c.podTimeout.String())
	cmd.Env = append(benchkit.AgentEnv(b.Emulator, b.tokens[i]), spec.EnvSpec+"="+raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		return podRun{}, fmt.Errorf("%v after %v, stderr:\n%s", err, elapsed.Round(time.Millisecond), benchkit.LastLines(stderr.String(), 5))
	}
	if n := benchkit.WrittenFiles(dir); n != b.c.secrets {
		return podRun{}, fmt.Errorf("%d files written, want %d", n, b.c.secrets)
	}
	if c != nil {
		if want := fmt.Sprintf(`"fromCache":%d,"stale":0`, b.c.secrets); !strings.Contains(stderr.String(), want) {
			return podRun{}, fmt.Errorf("the cache did not serve every secret fresh (want %s in the log):\n%s", want, benchkit.LastLines(stderr.String(), 5))
		}
	}
	p := podRun{ms: float64(elapsed.Microseconds()) / 1000}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.cpuMs = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
	}
	return p, nil
}

// spreadUp says the smallest and largest of a counter over the samples.
func spreadUp(us []upstream, f func(upstream) int64) (lo, hi int64) {
	for i, u := range us {
		v := f(u)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}
