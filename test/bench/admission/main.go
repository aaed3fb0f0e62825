// Command admission is kvinject's admission benchmark. It runs, in the same
// run, a minimal standard-library webhook (the floor), the two webhooks
// users pick instead of kvinject (the Vault Agent Injector, vault-k8s, and
// the Azure Workload Identity webhook, azwi) and the real `kvinject webhook`,
// the last three against envtest's kube-apiserver. It starts each server as
// a fresh process per cell, pinned to one CPU, drives it from a load
// generator process pinned to another CPU with Pod CREATE AdmissionReviews
// it really mutates (each injector's opt-in on the same base pod) over
// loopback TLS with keep-alive (HTTP/1.1 and HTTP/2, concurrency 1 and 16),
// and writes the Admission section of docs/benchmarks.md with ratios and
// verdicts computed from that run.
//
// The azwi webhook listens on :9443 (every address; it has no flag to
// change that), so does `kvinject webhook` on its port, and vault-k8s reads
// its API server credentials only from
// /var/run/secrets/kubernetes.io/serviceaccount. So the benchmark
// re-executes itself in private network and mount namespaces (unshare;
// needs root), where only loopback exists and a tmpfs over /run holds those
// credentials: nothing outside the temporary directory changes and nothing
// listens on the machine's network. A peer whose binary is missing, or that
// cannot run for want of root or unshare, is skipped with a note in the
// report.
//
//	go run ./test/bench/admission                         # the whole run, rewrites docs/benchmarks.md
//	go run ./test/bench/admission -out -                  # print the section only
//	go run ./test/bench/admission -servers floor,kvinject # without the peers
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

// nsCommand is the hidden subcommand the benchmark re-executes itself with
// inside the private namespaces.
const nsCommand = "in-namespaces"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := runLoadgen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == nsCommand {
		err = runInNamespaces(ctx, os.Args[2:])
	} else {
		err = run(ctx, os.Args[1:])
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "admission benchmark:", err)
		os.Exit(1)
	}
}

type config struct {
	duration, warmup time.Duration
	reps             int
	concs            []int
	protos           []string
	servers          []string
	out              string
	serverCPU        string
	loadCPU          string
	serverEnv        []string
	azwi, vaultK8s   string // peer binaries as given (empty: bin/peers/... under the root)
	azwiVersion      string
	vaultK8sVersion  string
}

func parseFlags(args []string) (config, error) {
	var c config
	var concs, protos, servers, serverEnv string
	fs := flag.NewFlagSet("admission", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured time per cell")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "warm-up time per cell, not measured")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of every cell, interleaved; the tables show medians")
	fs.StringVar(&concs, "c", "1,16", "concurrencies")
	fs.StringVar(&protos, "protos", "http/1.1,h2", "protocols")
	fs.StringVar(&servers, "servers", "floor,vault-k8s,azwi,kvinject", "servers, in table order: floor (test/bench/floor), vault-k8s (the Vault Agent Injector), azwi (the Azure Workload Identity webhook), kvinject (the real `kvinject webhook` against envtest)")
	fs.StringVar(&c.out, "out", "docs/benchmarks.md", "file whose Admission section is rewritten, or - for stdout")
	fs.StringVar(&c.serverCPU, "server-cpu", "1", "CPU list the servers are pinned to (taskset -c), empty for none")
	fs.StringVar(&c.loadCPU, "load-cpu", "0", "CPU list the load generator is pinned to, empty for none")
	fs.StringVar(&serverEnv, "server-env", "", "comma-separated VAR=value added to every server's environment (experiments, e.g. GOGC=200)")
	fs.StringVar(&c.azwi, "azwi", "", "the Azure Workload Identity webhook binary, or a .gz of it (default bin/peers/azwi-webhook under the repository root)")
	fs.StringVar(&c.vaultK8s, "vault-k8s", "", "the vault-k8s binary, or a .gz of it (default bin/peers/vault-k8s under the repository root)")
	fs.StringVar(&c.azwiVersion, "azwi-version", "v1.6.0", "the azwi version the binary was built from, for the report")
	fs.StringVar(&c.vaultK8sVersion, "vault-k8s-version", "v1.7.6", "the vault-k8s version the binary was built from, for the report")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if serverEnv != "" {
		c.serverEnv = strings.Split(serverEnv, ",")
	}
	for _, s := range strings.Split(concs, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return c, fmt.Errorf("-c %q", concs)
		}
		c.concs = append(c.concs, n)
	}
	c.protos = strings.Split(protos, ",")
	c.servers = strings.Split(servers, ",")
	for _, s := range c.servers {
		if _, ok := specs[s]; !ok {
			return c, fmt.Errorf("unknown server %q", s)
		}
	}
	if c.reps < 1 {
		return c, errors.New("-reps must be at least 1")
	}
	return c, nil
}

// plan is what the outer process prepared: the servers that run, their
// binaries, and notes on the ones skipped. It is handed to the process in
// the private namespaces as a JSON file.
type plan struct {
	Root        string            `json:"root"`
	Tmp         string            `json:"tmp"`
	Servers     []string          `json:"servers"`
	Bins        map[string]string `json:"bins"`
	Notes       []string          `json:"notes"`
	Isolated    bool              `json:"isolated"` // runs in private network and mount namespaces
	OuterMntNS  string            `json:"outer_mnt_ns"`
	OuterNetNS  string            `json:"outer_net_ns"`
	PeerSHA256  map[string]string `json:"peer_sha256"`
	DeadlineUTC time.Time         `json:"deadline"`
	Start       time.Time         `json:"start"`
}

var peerBuild = map[string]string{
	"azwi":      "`github.com/Azure/azure-workload-identity` at tag v1.6.0, package `./cmd/webhook`",
	"vault-k8s": "`github.com/hashicorp/vault-k8s` at tag v1.7.6, the module root",
}

func isPeer(s string) bool { return s == "azwi" || s == "vault-k8s" }

func run(ctx context.Context, args []string) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	root, err := k8stest.FindRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "kvinject-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pl := &plan{Root: root, Tmp: tmp, Bins: map[string]string{}, PeerSHA256: map[string]string{}, Start: time.Now()}
	// A bound on the whole run: every cell at its worst, plus envtest and builds.
	cells := len(c.servers) * len(c.protos) * len(c.concs) * c.reps
	bound := 10*time.Minute + time.Duration(cells)*(c.warmup+c.duration+45*time.Second)
	pl.DeadlineUTC = time.Now().Add(bound).UTC()
	ctx, cancel := context.WithDeadline(ctx, pl.DeadlineUTC)
	defer cancel()

	// The peers: present, decompressed, and runnable in private namespaces.
	for _, s := range c.servers {
		if !isPeer(s) {
			continue
		}
		given := map[string]string{"azwi": c.azwi, "vault-k8s": c.vaultK8s}[s]
		def := map[string]string{"azwi": "bin/peers/azwi-webhook", "vault-k8s": "bin/peers/vault-k8s"}[s]
		path := given
		if path == "" {
			path = filepath.Join(root, def)
		}
		bin, sum, err := preparePeer(path, filepath.Join(tmp, s))
		if err != nil {
			flagName := "-" + s
			pl.Notes = append(pl.Notes, fmt.Sprintf("**%s** skipped: %v. Build it with `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'` from %s, then put it at `%s` or pass `%s PATH` (`make bench-admission %s=PATH`).",
				s, err, peerBuild[s], def, flagName, map[string]string{"azwi": "AZWI", "vault-k8s": "VAULT_K8S"}[s]))
			continue
		}
		pl.Bins[s], pl.PeerSHA256[s] = bin, sum
	}
	// Isolate whenever possible: besides azwi, `kvinject webhook` listens
	// on every address too (it has no flag for the host).
	if why := cannotIsolate(); why != "" {
		for _, s := range c.servers {
			if _, ok := pl.Bins[s]; ok && isPeer(s) {
				pl.Notes = append(pl.Notes, fmt.Sprintf("**%s** skipped: %s; the peers run only in private network and mount namespaces (azwi listens on every address, vault-k8s reads credentials at a fixed system path).", s, why))
				delete(pl.Bins, s)
			}
		}
		if slices.Contains(c.servers, "kvinject") {
			pl.Notes = append(pl.Notes, fmt.Sprintf("No private namespaces (%s): kvinject's webhook port listened on every address of this machine during its cells.", why))
		}
	} else {
		pl.Isolated = true
	}
	for _, s := range c.servers {
		if !isPeer(s) || pl.Bins[s] != "" {
			pl.Servers = append(pl.Servers, s)
		}
	}
	for _, n := range pl.Notes {
		logf("note: %s", n)
	}

	logf("building the servers")
	for name, pkg := range map[string]string{"floor": "./test/bench/floor", "kvinject": "./cmd/kvinject-webhook", "kvinject-cache": "./cmd/kvinject-cache"} {
		if !slices.Contains(pl.Servers, strings.TrimSuffix(name, "-cache")) {
			continue
		}
		out := filepath.Join(tmp, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
		pl.Bins[name] = out
	}

	if !pl.Isolated {
		return measure(ctx, c, pl)
	}
	// Everything else runs in private network and mount namespaces.
	if pl.OuterMntNS, err = os.Readlink("/proc/self/ns/mnt"); err != nil {
		return err
	}
	if pl.OuterNetNS, err = os.Readlink("/proc/self/ns/net"); err != nil {
		return err
	}
	planFile := filepath.Join(tmp, "plan.json")
	b, err := json.Marshal(pl)
	if err != nil {
		return err
	}
	if err := os.WriteFile(planFile, b, 0o600); err != nil {
		return err
	}
	logf("re-executing in private network and mount namespaces")
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--net", "--mount", "--propagation", "private", self, nsCommand, planFile}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// unshare execs the benchmark: on cancellation it gets SIGTERM and
	// stops what it started; SIGKILL only if it has not exited 60s later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 60 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("benchmark in private namespaces: %w", err)
	}
	return nil
}

// runInNamespaces is the re-executed benchmark: args are the plan file and
// the original flags.
func runInNamespaces(ctx context.Context, args []string) error {
	if len(args) < 1 {
		return errors.New(nsCommand + ": no plan")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var pl plan
	if err := json.Unmarshal(b, &pl); err != nil {
		return err
	}
	c, err := parseFlags(args[1:])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, pl.DeadlineUTC.Add(-30*time.Second))
	defer cancel()
	mnt, err1 := os.Readlink("/proc/self/ns/mnt")
	netns, err2 := os.Readlink("/proc/self/ns/net")
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if mnt == pl.OuterMntNS || netns == pl.OuterNetNS {
		return fmt.Errorf("%s: not in private namespaces (mnt %s, net %s)", nsCommand, mnt, netns)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	return measure(ctx, c, &pl)
}

// cannotIsolate says why the peers cannot run in private namespaces, or "".
func cannotIsolate() string {
	if runtime.GOOS != "linux" {
		return "not Linux"
	}
	if os.Geteuid() != 0 {
		return "not running as root (unshare --net --mount needs it)"
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("no `%s` in PATH", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "unshare", "--net", "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
		return fmt.Sprintf("`unshare --net --mount` fails here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	return ""
}

// preparePeer checks a peer binary, decompressing a .gz into out, and
// returns the executable's path and its SHA-256.
func preparePeer(path, out string) (string, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("no binary at `%s`", path)
	}
	if st.IsDir() {
		return "", "", fmt.Errorf("`%s` is a directory", path)
	}
	bin := path
	if strings.HasSuffix(path, ".gz") {
		in, err := os.Open(path)
		if err != nil {
			return "", "", err
		}
		defer in.Close()
		zr, err := gzip.NewReader(in)
		if err != nil {
			return "", "", fmt.Errorf("`%s`: %v", path, err)
		}
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return "", "", err
		}
		if _, err := io.Copy(f, zr); err != nil {
			f.Close()
			return "", "", fmt.Errorf("`%s`: %v", path, err)
		}
		if err := f.Close(); err != nil {
			return "", "", err
		}
		bin = out
	} else if st.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("`%s` is not executable", path)
	}
	f, err := os.Open(bin)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", "", err
	}
	return bin, hex.EncodeToString(h.Sum(nil)), nil
}

// measure runs every cell and writes the report.
func measure(ctx context.Context, c config, pl *plan) error {
	certDir := filepath.Join(pl.Tmp, "certs")
	if err := writeCert(certDir); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b := &bench{c: c, pl: pl, self: self, certDir: certDir}
	if slices.ContainsFunc(pl.Servers, func(s string) bool { return s != "floor" }) {
		logf("starting envtest (kube-apiserver and etcd)")
		stopEnv, err := b.startEnvtest(ctx)
		if err != nil {
			return err
		}
		defer stopEnv()
	}

	results := map[cellKey][]result{}
	for rep := 0; rep < c.reps; rep++ {
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				order := slices.Clone(pl.Servers)
				if rep%2 == 1 {
					slices.Reverse(order)
				}
				for _, srv := range order {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					r, err := b.cell(ctx, srv, proto, conc)
					if err != nil {
						return fmt.Errorf("%s %s c=%d: %w", srv, proto, conc, err)
					}
					logf("rep %d %-9s %-8s c=%-2d %6.0f req/s p50 %6.0fµs p99 %6.0fµs cpu/req %5.0fµs hwm %5.1f MB (anon %4.1f file %4.1f) patch %d B",
						rep+1, srv, r.Proto, conc, r.RPS, r.P50us, r.P99us, r.CPUPerReqUs, float64(r.HWMKiB)/1024, float64(r.AnonKiB)/1024, float64(r.FileKiB)/1024, r.PatchBytes)
					k := cellKey{srv, proto, conc}
					results[k] = append(results[k], r)
				}
			}
		}
	}

	idle, err := b.idle(ctx)
	if err != nil {
		return err
	}
	section, err := report(c, pl, results, idle)
	if err != nil {
		return err
	}
	if c.out == "-" {
		fmt.Print(section)
		return nil
	}
	path := c.out
	if !filepath.IsAbs(path) {
		path = filepath.Join(pl.Root, path)
	}
	return writeSection(path, section)
}

type cellKey struct {
	server, proto string
	conc          int
}

type bench struct {
	c          config
	pl         *plan
	self       string
	certDir    string
	kubeconfig string
	apiHost    string // envtest's kube-apiserver, host and port
	apiPort    string
}

// serverSpec is how the load generator talks to a server.
type serverSpec struct {
	port   int
	path   string
	optIn  string // the opt-in its pods carry
	expect string // a string its patch must contain: proof it injected
}

const (
	webhookPort = 19443
	probePort   = 19081
	metricsPort = 19082
	azwiPort    = 9443 // fixed in azwi
)

var specs = map[string]serverSpec{
	"floor":     {webhookPort, "/mutate-v1-pod", optInKvinject, "kvinject.io~1status"},
	"kvinject":  {webhookPort, "/mutate-v1-pod", optInKvinject, "kvinject-agent"},
	"azwi":      {azwiPort, "/mutate-v1-pod", optInAzwi, "azure-identity-token"},
	"vault-k8s": {webhookPort, "/mutate", optInVault, "vault-agent-init"},
	// Measured idle only (no load): the cache's server.
	"kvinject-cache": {port: webhookPort},
}

// startServer starts one server process, pinned, and waits until it serves.
func (b *bench) startServer(ctx context.Context, name string) (*proc, error) {
	spec := specs[name]
	var args, env []string
	httpReady := func(url string) func() error {
		return func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", url, resp.Status)
			}
			return nil
		}
	}
	var ready func() error
	tlsReady := func() error {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.port)), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
		}
		return err
	}
	bin := b.pl.Bins[name]
	switch name {
	case "floor":
		args = []string{bin, "-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(webhookPort)), "-cert-dir", b.certDir}
	case "kvinject":
		args = []string{bin, "--agent-image=ghcr.io/kvinject/kvinject:bench", "--tenant-id=" + benchTenant,
			"--port=" + strconv.Itoa(webhookPort), "--cert-dir=" + b.certDir, "--metrics-bind-address=0",
			"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort), "--kubeconfig=" + b.kubeconfig}
		ready = httpReady("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz")
	case "kvinject-cache":
		args = []string{bin, "--port=" + strconv.Itoa(webhookPort), "--cert-dir=" + b.certDir, "--metrics-bind-address=0",
			"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort), "--kubeconfig=" + b.kubeconfig}
		ready = httpReady("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz")
	case "azwi":
		// Only in the private network namespace: it listens on :9443.
		args = []string{bin, "--webhook-cert-dir", b.certDir, "--disable-cert-rotation",
			"--health-addr", "127.0.0.1:" + strconv.Itoa(probePort), "--metrics-addr", "127.0.0.1:" + strconv.Itoa(metricsPort)}
		env = []string{"AZURE_TENANT_ID=" + benchTenant, "KUBECONFIG=" + b.kubeconfig}
		ready = httpReady("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz")
	case "vault-k8s":
		args = []string{bin, "agent-inject", "-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(webhookPort)),
			"-tls-cert-file", filepath.Join(b.certDir, "tls.crt"), "-tls-key-file", filepath.Join(b.certDir, "tls.key"),
			"-vault-address", "https://vault.vault.svc:8200", "-telemetry-path", "/metrics"}
		env = []string{"KUBERNETES_SERVICE_HOST=" + b.apiHost, "KUBERNETES_SERVICE_PORT=" + b.apiPort}
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	if bin == "" {
		return nil, fmt.Errorf("no binary for %s", name)
	}
	if isPeer(name) && !b.pl.Isolated {
		return nil, fmt.Errorf("%s runs only in private namespaces", name)
	}
	if b.c.serverCPU != "" {
		args = append([]string{"taskset", "-c", b.c.serverCPU}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), b.c.serverEnv...), env...)
	cmd.SysProcAttr = dieWithParent()
	logFile, err := os.Create(filepath.Join(b.pl.Tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := tlsReady()
		if err == nil && ready != nil {
			err = ready()
		}
		if err == nil {
			return p, nil
		}
		exited := false
		select {
		case <-p.done:
			exited = true
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil || exited {
			p.stop()
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("%s did not start: %v\n%s", name, err, tail(log, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proc is a server process this benchmark started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

// stop ends the server by its process id: SIGTERM, then SIGKILL after 15s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// idleMem is a server's memory once it serves, before any request.
type idleMem struct {
	RSSKiB, AnonKiB, FileKiB []int64
	BinBytes                 int64
}

// idle measures kvinject's two servers, the webhook and the cache, idle:
// a fresh process each, read idleSettle after it is ready, every rep.
func (b *bench) idle(ctx context.Context) (map[string]*idleMem, error) {
	if !slices.Contains(b.pl.Servers, "kvinject") {
		return nil, nil
	}
	out := map[string]*idleMem{}
	for rep := 0; rep < b.c.reps; rep++ {
		for _, name := range []string{"kvinject", "kvinject-cache"} {
			p, err := b.startServer(ctx, name)
			if err != nil {
				return nil, err
			}
			time.Sleep(idleSettle)
			rss, anon, file, err := procRSS(p.cmd.Process.Pid)
			p.stop()
			if err != nil {
				return nil, err
			}
			m := out[name]
			if m == nil {
				fi, err := os.Stat(b.pl.Bins[name])
				if err != nil {
					return nil, err
				}
				m = &idleMem{BinBytes: fi.Size()}
				out[name] = m
			}
			m.RSSKiB, m.AnonKiB, m.FileKiB = append(m.RSSKiB, rss), append(m.AnonKiB, anon), append(m.FileKiB, file)
			logf("idle rep %d %-14s rss %5.1f MB (anon %4.1f file %4.1f)", rep+1, name, float64(rss)/1024, float64(anon)/1024, float64(file)/1024)
		}
	}
	return out, nil
}

// idleSettle is how long a ready server idles before it is read: its
// informers' first lists and the first GC cycles are over by then.
const idleSettle = 3 * time.Second

// cell runs one measurement against a fresh server process.
func (b *bench) cell(ctx context.Context, server, proto string, conc int) (result, error) {
	p, err := b.startServer(ctx, server)
	if err != nil {
		return result{}, err
	}
	defer p.stop()
	pid := p.cmd.Process.Pid // taskset execs the server: same pid
	r, err := b.load(ctx, pid, server, proto, conc, b.c.duration)
	if err != nil {
		return result{}, err
	}
	if r.HWMKiB, r.AnonKiB, r.FileKiB, err = procMem(pid); err != nil {
		return result{}, err
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("%d failed requests, first: %s", r.Errors, r.FirstError)
	}
	return r, nil
}

func (b *bench) load(ctx context.Context, pid int, server, proto string, conc int, d time.Duration) (result, error) {
	spec := specs[server]
	args := []string{b.self, "loadgen", "-url", fmt.Sprintf("https://127.0.0.1:%d%s", spec.port, spec.path),
		"-proto", proto, "-c", strconv.Itoa(conc), "-duration", d.String(), "-warmup", b.c.warmup.String(),
		"-pid", strconv.Itoa(pid), "-ca", filepath.Join(b.certDir, "tls.crt"), "-expect", spec.expect, "-optin", spec.optIn}
	if b.c.loadCPU != "" {
		args = append([]string{"taskset", "-c", b.c.loadCPU}, args...)
	}
	cctx, cancel := context.WithTimeout(ctx, d+b.c.warmup+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	cmd.SysProcAttr = dieWithParent()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(filepath.Join(b.pl.Tmp, server+".log"))
		return result{}, fmt.Errorf("load generator: %v: %s\nserver log:\n%s", err, stderr.String(), tail(log, 1500))
	}
	var r result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("load generator output %q: %w", stdout.String(), err)
	}
	return r, nil
}

// startEnvtest runs kube-apiserver and etcd, creates the benchmark's
// namespace and ServiceAccount, and writes a kubeconfig for the webhooks.
// For vault-k8s, which only reads the in-cluster configuration, it writes a
// ServiceAccount token and the API server's CA to a tmpfs over /run (only in
// the private mount namespace).
func (b *bench) startEnvtest(ctx context.Context) (stop func(), err error) {
	root := b.pl.Root
	newest := func(pattern string) string {
		m, _ := filepath.Glob(filepath.Join(root, pattern))
		sort.Strings(m)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	env := &envtest.Environment{}
	env.ControlPlane.GetAPIServer().Path = newest("bin/k8s/v*/kube-apiserver")
	env.ControlPlane.Etcd = &envtest.Etcd{Path: newest("bin/k8s/etcd-*/etcd")}
	env.ControlPlane.KubectlPath = newest("bin/k8s/v*/kubectl")
	// A private network namespace has no default route for kube-apiserver
	// to pick its advertised address from, and loopback cannot be the
	// kubernetes Service's endpoint, which nothing here needs.
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1").Set("endpoint-reconciler-type", "none")
	if env.ControlPlane.GetAPIServer().Path == "" || env.ControlPlane.Etcd.Path == "" {
		return nil, errors.New("no Kubernetes binaries in bin/k8s: run make cluster-binaries, or pass -servers floor")
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	stop = func() {
		if err := env.Stop(); err != nil {
			logf("stop envtest: %v", err)
		}
	}
	fail := func(err error) (func(), error) { stop(); return nil, err }
	user, err := env.AddUser(envtest.User{Name: "kvinject-bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fail(err)
	}
	b.kubeconfig = filepath.Join(b.pl.Tmp, "kubeconfig")
	if err := os.WriteFile(b.kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{}); err != nil {
		return fail(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: benchSA, Namespace: benchNamespace,
		Annotations: map[string]string{"azure.workload.identity/client-id": benchClientID}}}
	if _, err := cs.CoreV1().ServiceAccounts(benchNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return fail(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return fail(err)
	}
	b.apiHost, b.apiPort = u.Hostname(), u.Port()
	if slices.Contains(b.pl.Servers, "vault-k8s") {
		if err := b.inClusterCredentials(ctx, cs, cfg.CAData); err != nil {
			return fail(fmt.Errorf("vault-k8s credentials: %w", err))
		}
	}
	return stop, nil
}

// inClusterCredentials gives vault-k8s what a pod has: a ServiceAccount
// (bound to cluster-admin) token, the CA and the namespace under
// /var/run/secrets/kubernetes.io/serviceaccount, on a tmpfs mounted over
// /run in the private mount namespace.
func (b *bench) inClusterCredentials(ctx context.Context, cs *kubernetes.Clientset, ca []byte) error {
	if !b.pl.Isolated {
		return errors.New("not in private namespaces")
	}
	mnt, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	if mnt == b.pl.OuterMntNS {
		return errors.New("not in a private mount namespace")
	}
	const name = "vault-agent-injector"
	if _, err := cs.CoreV1().ServiceAccounts(benchNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: benchNamespace}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		return err
	}
	tr, err := cs.CoreV1().ServiceAccounts(benchNamespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	run, err := filepath.EvalSymlinks("/var/run") // /run on most systems
	if err != nil {
		return err
	}
	if err := mountTmpfs(run); err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", run, err)
	}
	dir := "/var/run/secrets/kubernetes.io/serviceaccount"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for f, data := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": ca, "namespace": []byte(benchNamespace)} {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1.
func writeCert(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvinject-bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// machine describes where the run happened.
func machine() (model string, nproc int, goVersion string) {
	nproc = runtime.NumCPU()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	out, err := exec.Command("go", "version").Output()
	goVersion = strings.TrimSpace(string(out))
	if err != nil {
		goVersion = runtime.Version()
	}
	return model, nproc, goVersion
}
