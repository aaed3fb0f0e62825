// Command podstart is benchmark 2 of issue 7, "Pod start": the cost of
// kvinject's init container (`kvinject-agent`, the real CGO_ENABLED=0 binary
// run as a subprocess with production wiring: HTTPS_PROXY, SSL_CERT_FILE and
// the AZURE_* variables) against the Entra ID + Key Vault emulator, beside a
// baseline that uses the Azure SDK the obvious way (./naive: instance
// discovery on, the Key Vault challenge flow, one GET after another).
//
// For 1, 10 and 50 secrets on four links (no added latency; 50 ms per round
// trip, charged on every request and every new connection; 200 kbit/s each
// way; both) it measures time to files, HTTPS requests, TLS handshakes,
// bytes each way on the wire (TLS records, headers included: the emulator's
// raw connection counters) and in HTTP bodies, and the process's peak memory
// (VmHWM, plus RssAnon and RssFile peaks sampled from /proc/PID/status).
// Cells are interleaved, repeated, and reported as medians.
//
// It also measures what External Secrets Operator's azurekv provider does per
// refresh (see eso.go) and the reference pod's start, and writes them into a
// generated block of docs/eso-comparison.md.
//
//	go run ./test/bench/podstart                  # rewrites the two sections
//	go run ./test/bench/podstart -out - -eso-out - # prints them instead
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
	"strconv"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

const (
	namespace = "group1"
	saName    = "dbreaderapp"

	// The reference setup's secrets (copied in internal/esoconvert/testdata). The
	// registry credential is made up, with a realistic size.
	pgsqlName     = "app-pgsql"
	pgsqlValue    = `{"username":"superman","password":"louiselane"}`
	registryName  = "mirror-registry-cred"
	registryValue = `{"auths":{"mirror-registry.alishomelab.local:8443":{"username":"mirror-pull","password":"Zx8rT2pq9LmV4nB7cK1sW6yH","auth":"bWlycm9yLXB1bGw6Wng4clQycHE5TG1WNG5CN2NLMXNXNnlI"}}}`
)

// link is one network condition.
type link struct {
	Name    string
	Latency time.Duration // per request and per new connection
	BPS     int64         // each direction of every connection; 0 unlimited
}

var links = []link{
	{"0 ms", 0, 0},
	{"50 ms", 50 * time.Millisecond, 0},
	{"200 kbit/s", 0, 200_000},
	{"200 kbit/s + 50 ms", 50 * time.Millisecond, 200_000},
}

type config struct {
	reps        int
	sizes       []int
	out         string
	esoOut      string
	agentBin    string
	cellTimeout time.Duration
	budget      time.Duration
	seed        uint64
	refresh     time.Duration
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("podstart: ")
	var c config
	var sizes string
	flag.IntVar(&c.reps, "reps", 7, "repetitions of every cell (medians are reported)")
	flag.StringVar(&sizes, "secrets", "1,10,50", "secret counts")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "file whose podstart section is rewritten, or - for stdout")
	flag.StringVar(&c.esoOut, "eso-out", "docs/eso-comparison.md", "file whose generated podstart-eso block is rewritten, - for stdout, empty to skip")
	flag.StringVar(&c.agentBin, "agent-bin", "", "agent binary to run (default: build ./cmd/kvinject-agent as the Dockerfile does)")
	flag.DurationVar(&c.cellTimeout, "cell-timeout", 60*time.Second, "time limit of one run of one cell")
	flag.DurationVar(&c.budget, "budget", 3*time.Minute+30*time.Second, "stop starting new repetitions after this long (at least 3 are kept)")
	flag.Uint64Var(&c.seed, "seed", 7, "seed of the cell order")
	flag.DurationVar(&c.refresh, "refresh-interval", 10*time.Second, "interval of the refresh sidecar's measurement (0 skips it); pods use 1m or more, the cost per refresh is the same")
	flag.Parse()
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 100 {
			log.Fatalf("-secrets: bad count %q", s)
		}
		c.sizes = append(c.sizes, n)
	}
	if c.reps < 1 {
		log.Fatal("-reps must be at least 1")
	}
	if runtime.GOOS != "linux" {
		log.Fatal("needs Linux (/proc/PID/status for memory)")
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// bench holds the running emulator, issuer and binaries.
type bench struct {
	*benchkit.Azure // the issuer and the emulator, running

	c         config
	tmp       string
	tokenFile string
	agentBin  string
	naiveBin  string
	env       []string
}

func run(c config) error {
	started := time.Now()
	tmp, err := os.MkdirTemp("", "podstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{c: c, tmp: tmp}
	// The agent as the Dockerfile builds it (unless -agent-bin), and the
	// naive baseline the same way.
	if b.agentBin, b.naiveBin, err = benchkit.BuildBinaries(tmp, c.agentBin, "naive", "./test/bench/podstart/naive"); err != nil {
		return err
	}
	if b.Azure, err = benchkit.StartAzure(namespace, saName, vaultSecrets()); err != nil {
		return err
	}
	defer b.Azure.Close()
	b.tokenFile = filepath.Join(tmp, "token")
	// Longer than the run: the emulator allows 5 minutes of skew only.
	if _, err := b.Issuer.WriteToken(b.tokenFile, oidctest.Claims{Namespace: namespace, ServiceAccount: saName, Lifetime: 2 * time.Hour}); err != nil {
		return err
	}
	b.env = benchkit.AgentEnv(b.Emulator, b.tokenFile)

	// Warm up the page cache, the emulator's JWKS cache and both programs.
	for _, p := range []string{progAgent, progNaive} {
		if _, err := b.runCell(cell{prog: p, n: 1, link: links[0]}); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	var cells []cell
	for _, l := range links {
		for _, n := range c.sizes {
			for _, p := range []string{progAgent, progNaive} {
				cells = append(cells, cell{prog: p, n: n, link: l})
			}
		}
	}
	rng := rand.New(rand.NewPCG(c.seed, 1))
	samples := map[cell][]sample{}
	reps := 0
	for rep := range c.reps {
		if rep >= 3 && time.Since(started) > c.budget {
			log.Printf("budget of %v reached after %d repetitions", c.budget, rep)
			break
		}
		order := append([]cell(nil), cells...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, ce := range order {
			s, err := b.runCell(ce)
			if err != nil {
				return fmt.Errorf("%s, %d secrets, %s: %w", ce.prog, ce.n, ce.link.Name, err)
			}
			samples[ce] = append(samples[ce], s)
		}
		reps++
		log.Printf("repetition %d/%d done (%v)", rep+1, c.reps, time.Since(started).Round(time.Second))
	}

	// The reference pod (dbreaderapp: two files from app-pgsql) and ESO's
	// work per refresh, interleaved, on the unlimited link (bytes do not
	// depend on latency or bandwidth).
	var ref []sample
	eso := map[string][]sample{}
	for range reps {
		s, err := b.runCell(cell{prog: progAgent, ref: true, link: links[0]})
		if err != nil {
			return fmt.Errorf("reference pod: %w", err)
		}
		ref = append(ref, s)
		for _, op := range esoOps {
			s, err := b.runESO(op)
			if err != nil {
				return fmt.Errorf("ESO %s: %w", op.name, err)
			}
			eso[op.name] = append(eso[op.name], s)
		}
	}
	// The reference pod's start on the reference link, for its duration.
	var refSlow []sample
	for range reps {
		s, err := b.runCell(cell{prog: progAgent, ref: true, link: links[3]})
		if err != nil {
			return fmt.Errorf("reference pod: %w", err)
		}
		refSlow = append(refSlow, s)
	}

	// The refresh sidecar: per refresh, on the unlimited and the reference link.
	var refresh []refreshSample
	if c.refresh > 0 {
		for _, l := range []link{links[0], links[3]} {
			rs, err := b.runRefresh(l, c.refresh)
			if err != nil {
				return fmt.Errorf("refresh, %s: %w", l.Name, err)
			}
			refresh = append(refresh, rs)
		}
	}

	r := &results{refresh: refresh, refreshInterval: c.refresh,
		when: time.Now().UTC(), took: time.Since(started), reps: reps, sizes: c.sizes,
		cells: map[cell]sample{}, ref: median(ref), refSlow: median(refSlow), eso: map[string]sample{},
		agentSize: benchkit.FileSize(b.agentBin), naiveSize: benchkit.FileSize(b.naiveBin), cellTimeout: c.cellTimeout,
	}
	for k, v := range samples {
		r.cells[k] = median(v)
	}
	for k, v := range eso {
		r.eso[k] = median(v)
	}
	r.spread = map[cell][2]float64{}
	for k, v := range samples {
		lo, hi := v[0].ms, v[0].ms
		for _, s := range v {
			lo, hi = min(lo, s.ms), max(hi, s.ms)
		}
		r.spread[k] = [2]float64{lo, hi}
	}
	if err := benchkit.WriteSection(c.out, beginMarker, endMarker, r.benchmarksSection()); err != nil {
		return err
	}
	if c.esoOut != "" {
		if err := benchkit.WriteSection(c.esoOut, esoBeginMarker, esoEndMarker, r.esoSection()); err != nil {
			return err
		}
	}
	log.Printf("done in %v", time.Since(started).Round(time.Second))
	return nil
}

// vaultSecrets is what the emulator's vault holds: the reference secrets
// and sweep secrets 00 to 99.
func vaultSecrets() []azemu.Secret {
	secrets := []azemu.Secret{
		{Name: pgsqlName, Versions: []azemu.SecretVersion{{Value: pgsqlValue, ContentType: "application/json"}}},
		{Name: registryName, Versions: []azemu.SecretVersion{{Value: registryValue}}},
	}
	for i := range 100 {
		secrets = append(secrets, benchkit.SweepSecret(i))
	}
	return secrets
}

// specFor is the agent's spec for n secrets, one file each (a property of
// the JSON value), or the reference pod's two files from app-pgsql.
func specFor(n int, reference bool) (string, error) {
	cl, _ := spec.LookupCloud("AzurePublicCloud")
	s := &spec.Spec{Version: spec.Version, Vault: benchkit.VaultURL, MountPath: spec.DefaultMountPath,
		Identity: spec.Identity{ClientID: benchkit.ClientID, TenantID: benchkit.TenantID, TokenExpirationSeconds: 3600}}
	add := func(file, ref string) error {
		r, err := spec.ParseRef(ref, benchkit.VaultURL, cl)
		if err != nil {
			return err
		}
		s.Files = append(s.Files, spec.File{Name: file, Mode: "0400", Secret: &r})
		return nil
	}
	if reference {
		if err := add("username", pgsqlName+"#username"); err != nil {
			return "", err
		}
		if err := add("password", pgsqlName+"#password"); err != nil {
			return "", err
		}
	} else {
		for i := range n {
			if err := add(benchkit.SweepSecretName(i), benchkit.SweepSecretName(i)+"#v"); err != nil {
				return "", err
			}
		}
	}
	if err := s.Validate(); err != nil {
		return "", err
	}
	return s.Encode()
}

// timeoutCtx bounds one run.
func (b *bench) timeoutCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.c.cellTimeout)
}
