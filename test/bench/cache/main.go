// Command cache is the cluster cache's benchmark: what a rollout of one
// Deployment's 50 replicas, each reading the same 10 secrets as one
// ServiceAccount, costs the egress link with and without the kvinject cache,
// beside what External Secrets Operator's refresh of the same 10 secrets
// costs; and what the cache itself costs: its resident set with 1,000
// cached secrets, and its CPU per served request next to the agent's CPU
// per pod on the direct path.
//
// Everything is real but the cloud and the API server: the agent is the
// init container's binary (`kvinject-agent`, built CGO_ENABLED=0 as the
// Dockerfile builds it) run as a subprocess, one per pod, 10 at a time; the
// cache is `kvinject cache`'s server (./child: cacheserver.Serve, on
// loopback) in child processes of its own, 2 replicas, the agents
// alternating between them; Entra ID and Key Vault are the emulator
// (internal/azemu), on an unlimited link and on the reference 200 kbit/s
// link; the API server's TokenReview is answered by a stand-in on loopback
// (internal/testkit/cachetest.Reviewer's answer, over the real client-go request).
// ESO's refresh is replayed as podstart replays it
// (benchkit.ESOLegacyReconcile), with 10 data entries.
//
//	go run ./test/bench/cache          # rewrites its section of docs/benchmarks.md
//	go run ./test/bench/cache -out -   # prints it instead
//
// Everything listens on loopback. Linux only (/proc).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

const (
	namespace = "shop"
	saName    = "web"

	refLinkBPS = 200_000 // the reference egress link, each direction
	// ESO's default --store-requeue-interval: a ClusterSecretStore is
	// revalidated (a token exchange in the default mode) this often.
	storeRequeue = 5 * time.Minute
	// esoInterval is the reference ExternalSecret's refreshInterval.
	esoInterval = time.Hour
)

// link is one network condition of the emulator.
type link struct {
	Name string
	BPS  int64 // each direction of every connection; 0 unlimited
}

var links = []link{{"unlimited", 0}, {"200 kbit/s", refLinkBPS}}

type config struct {
	pods, secrets, parallel, replicas int
	reps                              int
	budget                            time.Duration
	fill                              int
	hitTime                           time.Duration
	out                               string
	agentBin                          string
	podTimeout                        time.Duration
	seed                              uint64
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench-cache: ")
	var c config
	flag.IntVar(&c.pods, "pods", 50, "replicas of the Deployment: agents per rollout")
	flag.IntVar(&c.secrets, "secrets", 10, "secrets every pod reads")
	flag.IntVar(&c.parallel, "parallel", 10, "agents running at once (the rollout's surge)")
	flag.IntVar(&c.replicas, "replicas", 2, "cache replicas; agents alternate between them")
	flag.IntVar(&c.reps, "reps", 3, "repetitions of every rollout (medians are reported)")
	flag.DurationVar(&c.budget, "budget", 2*time.Minute, "stop starting new repetitions after this long (at least 2 are kept)")
	flag.IntVar(&c.fill, "fill", 1000, "secrets cached for the memory measurement")
	flag.DurationVar(&c.hitTime, "hit-time", 4*time.Second, "how long the cache is asked for cached secrets, per connection mode, for its CPU per request")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "file whose cache section is rewritten, or - for stdout")
	flag.StringVar(&c.agentBin, "agent-bin", "", "agent binary to run (default: build ./cmd/kvinject-agent as the Dockerfile does)")
	flag.DurationVar(&c.podTimeout, "pod-timeout", time.Minute, "time limit of one agent")
	flag.Uint64Var(&c.seed, "seed", 7, "seed of the cell order")
	flag.Parse()
	switch {
	case c.pods < 1 || c.secrets < 1 || c.secrets > 50 || c.parallel < 1 || c.replicas < 1 || c.reps < 1:
		log.Fatal("-pods, -parallel, -replicas and -reps must be at least 1, -secrets 1 to 50")
	case c.fill < c.secrets || c.fill > 5000:
		log.Fatalf("-fill must be between -secrets and 5000")
	case runtime.GOOS != "linux":
		log.Fatal("needs Linux (/proc)")
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// bench holds what lives for the whole run.
type bench struct {
	*benchkit.Azure // the issuer and the emulator, running

	c        config
	api      *apiServer
	tmp      string
	agentBin string
	childBin string
	tokens   []string // one token file per pod
	certDir  string   // the cache's tls.crt and tls.key
	caPEM    string   // what the agents trust for the cache
	values   []string // the fill secrets' values
	load     loadWatch
}

func run(c config) error {
	started := time.Now()
	b := &bench{c: c}
	b.load.sample()
	var err error
	if b.tmp, err = os.MkdirTemp("", "bench-cache-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	// The agent as the Dockerfile builds it (unless -agent-bin), and the
	// cache replica the same way.
	if b.agentBin, b.childBin, err = benchkit.BuildBinaries(b.tmp, c.agentBin, "kvinject-cache", "./test/bench/cache/child"); err != nil {
		return err
	}
	b.load.begin()
	if b.Azure, err = benchkit.StartAzure(namespace, saName, b.secrets()); err != nil {
		return err
	}
	defer b.Azure.Close()
	if err := b.writeTokens(); err != nil {
		return err
	}
	if b.api, err = startAPIServer(b.tmp); err != nil {
		return err
	}
	defer b.api.close()
	if err := b.writeCert(); err != nil {
		return err
	}

	// Warm up the page cache, the emulator's JWKS cache and both binaries.
	if _, err := b.runAgent(context.Background(), 0, nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if ch, err := b.startChild(); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	} else if err := ch.stop(); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	r := &results{c: c, when: started.UTC(), rollouts: map[cellKey][]rolloutSample{}, eso: map[esoOp][]upstream{}}
	type cell struct {
		link  link
		cache bool
	}
	var cells []cell
	for _, l := range links {
		cells = append(cells, cell{l, false}, cell{l, true})
	}
	rng := rand.New(rand.NewPCG(c.seed, 1))
	for rep := range c.reps {
		if rep >= 2 && time.Since(started) > c.budget {
			log.Printf("budget of %v reached after %d repetitions", c.budget, rep)
			break
		}
		rng.Shuffle(len(cells), func(i, j int) { cells[i], cells[j] = cells[j], cells[i] })
		for _, ce := range cells {
			if !ce.cache {
				s, err := b.rollout(ce.link, nil)
				if err != nil {
					return fmt.Errorf("direct, %s: %w", ce.link.Name, err)
				}
				r.add(cellKey{ce.link.Name, scDirect}, s)
				continue
			}
			cold, warm, mem, err := b.cachedRollouts(ce.link)
			if err != nil {
				return fmt.Errorf("through the cache, %s: %w", ce.link.Name, err)
			}
			r.add(cellKey{ce.link.Name, scCold}, cold)
			r.add(cellKey{ce.link.Name, scWarm}, warm)
			r.rolloutMem = append(r.rolloutMem, mem...)
		}
		r.reps++
		b.load.sample()
		log.Printf("repetition %d/%d done (%v)", rep+1, c.reps, time.Since(started).Round(time.Second))
	}

	// ESO's refresh of the same secrets, and its store revalidation.
	for range r.reps {
		for _, op := range []esoOp{esoRefreshOp, esoRevalidateOp} {
			s, err := b.runESO(op)
			if err != nil {
				return fmt.Errorf("ESO %s: %w", op, err)
			}
			r.eso[op] = append(r.eso[op], s)
		}
	}

	// The cache's memory with 1,000 secrets, and its CPU per request.
	if r.fill, err = b.fillAndHit(); err != nil {
		return fmt.Errorf("the cache filled with %d secrets: %w", c.fill, err)
	}
	b.load.sample()
	b.load.end()
	r.agentSize, r.childSize = benchkit.FileSize(b.agentBin), benchkit.FileSize(b.childBin)
	r.unknownAPI = b.api.unknownPaths()
	r.load = b.load
	r.took = time.Since(started)
	if err := benchkit.WriteSection(c.out, beginMarker, endMarker, r.section()); err != nil {
		return err
	}
	log.Printf("done in %v", time.Since(started).Round(time.Second))
	return nil
}

// secrets is what the emulator's vault holds: the pods' secrets and the
// secrets that fill the cache.
func (b *bench) secrets() []azemu.Secret {
	var secrets []azemu.Secret
	for i := range b.c.secrets {
		secrets = append(secrets, benchkit.SweepSecret(i))
	}
	b.values = make([]string, b.c.fill)
	for i := range b.c.fill {
		b.values[i] = fillValue(i, b.c.fill)
		secrets = append(secrets, azemu.Secret{Name: fillSecret(i), Versions: []azemu.SecretVersion{{Value: b.values[i]}}})
	}
	return secrets
}

// The pods' secrets are podstart's sweep secrets (the same names and 64-byte
// JSON values), so that a pod's direct cost matches podstart's 10-secret row.
func podSecret(i int) string { return benchkit.SweepSecretName(i) }

func fillSecret(i int) string { return fmt.Sprintf("cached-%04d", i) }

// fillValue is secret i of n: its length grows evenly from 100 to 2,000
// bytes over the n secrets (a password, a connection string, a small
// certificate or JSON document), of letters and digits from a generator
// seeded by i.
func fillValue(i, n int) string {
	size := 100
	if n > 1 {
		size += i * 1900 / (n - 1)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	v := make([]byte, size)
	for j := range v {
		v[j] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(v)
}

// writeTokens writes one projected token per pod (each pod has its own),
// living longer than the run: the emulator allows 5 minutes of skew only.
func (b *bench) writeTokens() error {
	dir := filepath.Join(b.tmp, "tokens")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	for i := range b.c.pods {
		p := filepath.Join(dir, fmt.Sprintf("pod-%02d", i))
		if _, err := b.Issuer.WriteToken(p, oidctest.Claims{Namespace: namespace, ServiceAccount: saName, Lifetime: 2 * time.Hour}); err != nil {
			return err
		}
		b.tokens = append(b.tokens, p)
	}
	return nil
}

// writeCert writes the cache's serving certificate: ECDSA P-256 for
// 127.0.0.1, as the cache's self-signed source makes them (P-256).
func (b *bench) writeCert() error {
	cert, err := certtest.SelfSigned(certtest.EC, "127.0.0.1")
	if err != nil {
		return err
	}
	keyPEM, err := certtest.PEM(certtest.PKCS8Block(cert.Key))
	if err != nil {
		return err
	}
	b.certDir = filepath.Join(b.tmp, "cache-cert")
	if err := os.Mkdir(b.certDir, 0o700); err != nil {
		return err
	}
	b.caPEM = string(certtest.CertsPEM(cert.Cert))
	if err := os.WriteFile(filepath.Join(b.certDir, "tls.crt"), []byte(b.caPEM), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.certDir, "tls.key"), []byte(keyPEM), 0o600)
}

// specFor is pod i's spec: one file per secret (a property of its JSON
// value), through the cache at cacheURL when not empty. The cache is
// required, so an agent that could not be served fails the run instead of
// reading Azure behind the benchmark's back.
func (b *bench) specFor(cacheURL string) (string, error) {
	cl, _ := spec.LookupCloud("AzurePublicCloud")
	s := &spec.Spec{Version: spec.Version, Vault: benchkit.VaultURL, MountPath: spec.DefaultMountPath,
		Identity: spec.Identity{ClientID: benchkit.ClientID, TenantID: benchkit.TenantID, TokenExpirationSeconds: 3600}}
	for i := range b.c.secrets {
		r, err := spec.ParseRef(podSecret(i)+"#v", benchkit.VaultURL, cl)
		if err != nil {
			return "", err
		}
		s.Files = append(s.Files, spec.File{Name: podSecret(i), Mode: "0400", Secret: &r})
	}
	if cacheURL != "" {
		s.Cache = &spec.Cache{URL: cacheURL, CA: b.caPEM, Required: true}
	}
	if err := s.Validate(); err != nil {
		return "", err
	}
	return s.Encode()
}

// loadWatch records what the machine did during the run: the benchmark
// shares it with whatever else runs. The CPU split covers the measured
// part (after the builds): the machine's busy time (/proc/stat) and the
// benchmark's own (this process and every child it waited for: agents,
// cache replicas).
type loadWatch struct {
	samples []float64 // 1-minute load averages

	busy0, total0, own0 time.Duration
	busy, total, own    time.Duration
}

func (w *loadWatch) sample() {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	var one float64
	if _, err := fmt.Sscanf(string(raw), "%f", &one); err == nil {
		w.samples = append(w.samples, one)
	}
}

// begin and end delimit the CPU split.
func (w *loadWatch) begin() { w.busy0, w.total0, w.own0 = machineCPU(), machineTotal(), ownCPU() }
func (w *loadWatch) end() {
	w.busy, w.total, w.own = machineCPU()-w.busy0, machineTotal()-w.total0, ownCPU()-w.own0
}

// machineCPU and machineTotal are the busy and all CPU time of every CPU
// since boot (/proc/stat's cpu line, in 10 ms ticks; idle and iowait are
// not busy).
func machineCPU() time.Duration   { b, _ := procStat(); return b }
func machineTotal() time.Duration { _, t := procStat(); return t }

func procStat() (busy, total time.Duration) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already in user time
			break
		}
		sum += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(sum-idle) * time.Second / clockTicks, time.Duration(sum) * time.Second / clockTicks
}

// ownCPU is this process's CPU time and its waited-for children's.
func ownCPU() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	d := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return d(self.Utime) + d(self.Stime) + d(children.Utime) + d(children.Stime)
}

func (w loadWatch) String() string {
	if len(w.samples) == 0 {
		return "unknown"
	}
	s := slices.Clone(w.samples)
	slices.Sort(s)
	out := fmt.Sprintf("1-minute load average %.1f at the start, %.1f at the end, %.1f to %.1f in between",
		w.samples[0], w.samples[len(w.samples)-1], s[0], s[len(s)-1])
	if w.total > 0 {
		out += fmt.Sprintf("; over the measured part (after the builds) the CPUs were %.0f%% busy, %.0f%% with the benchmark's own processes (this program with the emulator and the API server stand-in, the agents, the cache replicas) and %.0f%% with other work",
			100*w.busy.Seconds()/w.total.Seconds(), 100*w.own.Seconds()/w.total.Seconds(), 100*max(0, (w.busy-w.own).Seconds())/w.total.Seconds())
	}
	return out
}
