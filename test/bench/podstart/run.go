package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

const (
	progAgent = "kvinject-agent"
	progNaive = "naive SDK"
)

// cell is one measured configuration.
type cell struct {
	prog string
	n    int
	ref  bool // the reference pod instead of n sweep secrets
	link link
}

// sample is one run's measurements (or a median of runs).
type sample struct {
	benchkit.Traffic         // what the emulator counted for the run
	ms               float64 // exec to exit; the files are in place at exit
	hwmKiB           int64   // VmHWM
	anonKiB          int64   // peak sampled RssAnon
	fileKiB          int64   // peak sampled RssFile
	rssKiB           int64   // peak sampled VmRSS
	samplesN         int     // /proc samples taken
}

var peakRSS = regexp.MustCompile(`"peakRSSKiB":(\d+)`)

// runCell runs the agent or the baseline once with the cell's link.
func (b *bench) runCell(c cell) (sample, error) {
	dir, err := os.MkdirTemp(benchkit.TmpfsDir(), "podstart-files-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		return sample{}, err
	}
	ctx, cancel := b.timeoutCtx()
	defer cancel()
	var cmd *exec.Cmd
	env := slices.Clone(b.env)
	switch c.prog {
	case progAgent:
		raw, err := specFor(c.n, c.ref)
		if err != nil {
			return sample{}, err
		}
		cmd = exec.CommandContext(ctx, b.agentBin, "--dir", dir,
			"--termination-log", filepath.Join(b.tmp, "no-termination-log"),
			"--timeout", b.c.cellTimeout.String())
		env = append(env, spec.EnvSpec+"="+raw)
	case progNaive:
		args := []string{"-vault", benchkit.VaultURL, "-dir", dir, "-timeout", b.c.cellTimeout.String()}
		for i := range c.n {
			args = append(args, benchkit.SweepSecretName(i))
		}
		cmd = exec.CommandContext(ctx, b.naiveBin, args...)
	default:
		return sample{}, fmt.Errorf("unknown program %q", c.prog)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second

	b.Emulator.SetKnobs(azemu.Knobs{RequestLatency: c.link.Latency, ConnLatency: c.link.Latency, BandwidthBPS: c.link.BPS})
	defer b.Emulator.SetKnobs(azemu.Knobs{})
	b.Emulator.ResetStats()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	mem := sampleMemory(cmd.Process.Pid)
	err = cmd.Wait()
	elapsed := time.Since(start)
	peak := mem()
	if err != nil {
		return sample{}, fmt.Errorf("%v after %v, stderr:\n%s", err, elapsed.Round(time.Millisecond), benchkit.LastLines(stderr.String(), 5))
	}
	want := c.n
	if c.ref {
		want = 2
	}
	if visible := benchkit.WrittenFiles(dir); visible != want {
		return sample{}, fmt.Errorf("%d files written, want %d", visible, want)
	}
	s := b.collect()
	s.ms = float64(elapsed.Microseconds()) / 1000
	s.anonKiB, s.fileKiB, s.rssKiB, s.hwmKiB, s.samplesN = peak.Anon, peak.File, peak.RSS, peak.HWM, peak.n
	if m := peakRSS.FindStringSubmatch(stderr.String()); m != nil {
		self, _ := strconv.ParseInt(m[1], 10, 64)
		s.hwmKiB = max(s.hwmKiB, self)
	}
	return s, nil
}

// collect reads the emulator's counters for the run just finished.
func (b *bench) collect() sample { return sample{Traffic: benchkit.ReadTraffic(b.Emulator)} }

// memPeak is the highest of every field over n readings of /proc/PID/status.
type memPeak struct {
	benchkit.ProcMem
	n int
}

// sampleMemory polls /proc/PID/status every millisecond until the returned
// function is called, and returns the peaks it saw. The kernel keeps a
// high-water mark only for the total (VmHWM); RssAnon and RssFile peaks can
// only be sampled, so they are lower bounds.
func sampleMemory(pid int) func() memPeak {
	var mu sync.Mutex
	var p memPeak
	stop := make(chan struct{})
	done := make(chan struct{})
	path := fmt.Sprintf("/proc/%d/status", pid)
	buf := make([]byte, 4096)
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			f, err := os.Open(path)
			if err == nil {
				n, _ := f.Read(buf)
				f.Close()
				if m, ok := benchkit.ParseProcStatus(buf[:n]); ok {
					mu.Lock()
					p.ProcMem, p.n = p.ProcMem.Max(m), p.n+1
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() memPeak {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return p
	}
}

// median takes the median of every field separately (the lower middle for
// an even count).
func median(ss []sample) sample {
	if len(ss) == 0 {
		return sample{}
	}
	mf := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		return benchkit.Median(v)
	}
	mi := func(f func(sample) int64) int64 { return int64(mf(func(s sample) float64 { return float64(f(s)) })) }
	traffic := make([]benchkit.Traffic, len(ss))
	for i, s := range ss {
		traffic[i] = s.Traffic
	}
	return sample{
		Traffic:  benchkit.MedianTraffic(traffic),
		ms:       mf(func(s sample) float64 { return s.ms }),
		hwmKiB:   mi(func(s sample) int64 { return s.hwmKiB }),
		anonKiB:  mi(func(s sample) int64 { return s.anonKiB }),
		fileKiB:  mi(func(s sample) int64 { return s.fileKiB }),
		rssKiB:   mi(func(s sample) int64 { return s.rssKiB }),
		samplesN: int(mi(func(s sample) int64 { return int64(s.samplesN) })),
	}
}
