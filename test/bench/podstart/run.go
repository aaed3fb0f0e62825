package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
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
	ms        float64 // exec to exit; the files are in place at exit
	requests  int64   // HTTPS requests to Entra ID and Key Vault
	classes   map[azemu.Class]int64
	conns     int64 // TLS connections (handshakes) the emulator terminated
	wireUp    int64 // client to Azure, raw bytes on the connections (TLS records)
	wireDown  int64 // Azure to client
	bodyUp    int64 // HTTP request bodies
	bodyDown  int64 // HTTP response bodies
	hwmKiB    int64 // VmHWM
	anonKiB   int64 // peak sampled RssAnon
	fileKiB   int64 // peak sampled RssFile
	rssKiB    int64 // peak sampled VmRSS
	samplesN  int   // /proc samples taken
	authToken int64 // tokens issued
}

var peakRSS = regexp.MustCompile(`"peakRSSKiB":(\d+)`)

// runCell runs the agent or the baseline once with the cell's link.
func (b *bench) runCell(c cell) (sample, error) {
	dir, err := os.MkdirTemp(shmDir(), "podstart-files-")
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
		args := []string{"-vault", vaultURL, "-dir", dir, "-timeout", b.c.cellTimeout.String()}
		for i := range c.n {
			args = append(args, sweepName(i))
		}
		cmd = exec.CommandContext(ctx, b.naiveBin, args...)
	default:
		return sample{}, fmt.Errorf("unknown program %q", c.prog)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second

	b.emu.SetKnobs(azemu.Knobs{RequestLatency: c.link.Latency, ConnLatency: c.link.Latency, BandwidthBPS: c.link.BPS})
	defer b.emu.SetKnobs(azemu.Knobs{})
	b.emu.ResetStats()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	mem := sampleMemory(cmd.Process.Pid)
	err = cmd.Wait()
	elapsed := time.Since(start)
	peak := mem()
	if err != nil {
		return sample{}, fmt.Errorf("%v after %v, stderr:\n%s", err, elapsed.Round(time.Millisecond), lastLines(stderr.String(), 5))
	}
	files, _ := os.ReadDir(dir)
	want := c.n
	if c.ref {
		want = 2
	}
	if visible := countVisible(files); visible != want {
		return sample{}, fmt.Errorf("%d files written, want %d", visible, want)
	}
	s := b.collect()
	s.ms = float64(elapsed.Microseconds()) / 1000
	s.anonKiB, s.fileKiB, s.rssKiB, s.hwmKiB, s.samplesN = peak.anon, peak.file, peak.rss, peak.hwm, peak.n
	if m := peakRSS.FindStringSubmatch(stderr.String()); m != nil {
		self, _ := strconv.ParseInt(m[1], 10, 64)
		s.hwmKiB = max(s.hwmKiB, self)
	}
	return s, nil
}

// collect reads the emulator's counters for the run just finished. The
// server side records a request when its handler returns, which can trail
// the client's exit by a moment.
func (b *bench) collect() sample {
	time.Sleep(30 * time.Millisecond)
	st := b.emu.Stats()
	s := sample{classes: map[azemu.Class]int64{}, conns: st.Connections,
		wireUp: st.ConnBytesIn, wireDown: st.ConnBytesOut, authToken: st.TokensIssued}
	for c, cs := range st.Classes {
		if c == azemu.ClassIssuerDiscovery || c == azemu.ClassIssuerJWKS {
			continue // the emulator's own outbound fetches, not the pod's
		}
		s.requests += cs.Requests
		s.classes[c] += cs.Requests
		s.bodyUp += cs.BytesIn
		s.bodyDown += cs.BytesOut
	}
	return s
}

func countVisible(es []os.DirEntry) int {
	n := 0
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), "..") {
			n++
		}
	}
	return n
}

func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

type memPeak struct {
	anon, file, rss, hwm int64
	n                    int
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
				mu.Lock()
				parseStatus(buf[:n], &p)
				mu.Unlock()
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

func parseStatus(b []byte, p *memPeak) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	seen := false
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "RssAnon":
			dst = &p.anon
		case "RssFile":
			dst = &p.file
		case "VmRSS":
			dst = &p.rss
		case "VmHWM":
			dst = &p.hwm
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err == nil {
			*dst = max(*dst, n)
			seen = true
		}
	}
	if seen {
		p.n++
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
		slices.Sort(v)
		return v[(len(v)-1)/2]
	}
	mi := func(f func(sample) int64) int64 { return int64(mf(func(s sample) float64 { return float64(f(s)) })) }
	out := sample{
		ms:        mf(func(s sample) float64 { return s.ms }),
		requests:  mi(func(s sample) int64 { return s.requests }),
		conns:     mi(func(s sample) int64 { return s.conns }),
		wireUp:    mi(func(s sample) int64 { return s.wireUp }),
		wireDown:  mi(func(s sample) int64 { return s.wireDown }),
		bodyUp:    mi(func(s sample) int64 { return s.bodyUp }),
		bodyDown:  mi(func(s sample) int64 { return s.bodyDown }),
		hwmKiB:    mi(func(s sample) int64 { return s.hwmKiB }),
		anonKiB:   mi(func(s sample) int64 { return s.anonKiB }),
		fileKiB:   mi(func(s sample) int64 { return s.fileKiB }),
		rssKiB:    mi(func(s sample) int64 { return s.rssKiB }),
		samplesN:  int(mi(func(s sample) int64 { return int64(s.samplesN) })),
		authToken: mi(func(s sample) int64 { return s.authToken }),
		classes:   map[azemu.Class]int64{},
	}
	keys := map[azemu.Class]bool{}
	for _, s := range ss {
		for k := range s.classes {
			keys[k] = true
		}
	}
	for k := range keys {
		out.classes[k] = mi(func(s sample) int64 { return s.classes[k] })
	}
	return out
}
