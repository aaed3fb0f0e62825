// Command admission is kvinject's admission benchmark (issue 7, benchmark
// 1). It builds the servers, starts each as its own process pinned to one
// CPU, drives it from a load generator process pinned to another CPU with
// realistic Pod CREATE AdmissionReviews over loopback TLS with keep-alive
// (HTTP/1.1 and HTTP/2, concurrency 1 and 16), and writes the Admission
// section of docs/benchmarks.md, with kvinject's ratios to the floor (a
// minimal standard-library webhook) measured in the same run.
//
//	go run ./test/bench/admission            # the whole run, rewrites docs/benchmarks.md
//	go run ./test/bench/admission -out -     # print the section only
//	go run ./test/bench/admission -profile /tmp/kv.pprof   # CPU profile of kvinject under load
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/k8stest"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := runLoadgen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
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
	profile          string
	breakdown        bool
	serverEnv        []string
}

func run(ctx context.Context) error {
	var c config
	var concs, protos, servers string
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "measured time per cell")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "warm-up time per cell, not measured")
	flag.IntVar(&c.reps, "reps", 3, "repetitions of every cell, interleaved; the table shows medians")
	flag.StringVar(&concs, "c", "1,16", "concurrencies")
	flag.StringVar(&protos, "protos", "http/1.1,h2", "protocols")
	flag.StringVar(&servers, "servers", "floor,cr-floor,kvinject,kvinject-static,kvinject+GOGC=200", "servers: floor, cr-floor (controller-runtime with a Defaulter that sets one annotation), kvinject (the real `kvinject webhook` against envtest), kvinject-static (kvinject's admission webhook alone, static ServiceAccount); NAME+VAR=value adds to a server's environment")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "file whose Admission section is rewritten, or - for stdout")
	flag.StringVar(&c.serverCPU, "server-cpu", "1", "CPU list the servers are pinned to (taskset -c), empty for none")
	flag.StringVar(&c.loadCPU, "load-cpu", "0", "CPU list the load generator is pinned to, empty for none")
	flag.StringVar(&c.profile, "profile", "", "only write a CPU profile of kvinject-static under h2 c=16 load to this file")
	flag.BoolVar(&c.breakdown, "breakdown", true, "also measure in-process where kvinject's CPU goes")
	serverEnv := flag.String("server-env", "", "comma-separated VAR=value added to the servers' environment (experiments, e.g. GOGC=200)")
	flag.Parse()
	if *serverEnv != "" {
		c.serverEnv = strings.Split(*serverEnv, ",")
	}
	for _, s := range strings.Split(concs, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("-c %q", concs)
		}
		c.concs = append(c.concs, n)
	}
	c.protos = strings.Split(protos, ",")
	c.servers = strings.Split(servers, ",")

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

	logf("building the servers")
	bins := map[string]string{"floor": "./test/bench/floor", "kvstatic": "./test/bench/kvstatic", "kvinject": "./cmd/kvinject"}
	for name, pkg := range bins {
		out := filepath.Join(tmp, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
		bins[name] = out
	}
	certDir := filepath.Join(tmp, "certs")
	if err := writeCert(certDir); err != nil {
		return err
	}
	b := &bench{c: c, self: self, bins: bins, certDir: certDir, tmp: tmp}

	if c.profile != "" {
		return b.profileStatic(ctx, c.profile)
	}

	if slices.Contains(c.servers, "kvinject") {
		logf("starting envtest (kube-apiserver and etcd)")
		stopEnv, err := b.startEnvtest(root)
		if err != nil {
			return err
		}
		defer stopEnv()
	}

	results := map[cellKey][]result{}
	for rep := 0; rep < c.reps; rep++ {
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				order := slices.Clone(c.servers)
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
					logf("rep %d %-15s %-8s c=%-2d %7.0f req/s p50 %6.0fµs p99 %6.0fµs cpu/req %5.0fµs hwm %5.1f MB (anon %4.1f file %4.1f)",
						rep+1, srv, r.Proto, conc, r.RPS, r.P50us, r.P99us, r.CPUPerReqUs, float64(r.HWMKiB)/1024, float64(r.AnonKiB)/1024, float64(r.FileKiB)/1024)
					k := cellKey{srv, proto, conc}
					results[k] = append(results[k], r)
				}
			}
		}
	}

	var bd []breakdownRow
	if c.breakdown {
		logf("measuring the in-process breakdown")
		if bd, err = breakdown(); err != nil {
			return err
		}
	}
	section, err := report(root, c, results, bd)
	if err != nil {
		return err
	}
	if c.out == "-" {
		fmt.Print(section)
		return nil
	}
	path := c.out
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	return writeSection(path, section)
}

type cellKey struct {
	server, proto string
	conc          int
}

type bench struct {
	c          config
	self       string
	bins       map[string]string
	certDir    string
	tmp        string
	kubeconfig string
}

const (
	webhookPort = 19443
	probePort   = 19081
)

// startServer starts one server process, pinned, and waits until it serves.
func (b *bench) startServer(ctx context.Context, server string, extra ...string) (*proc, error) {
	// "kvinject+GOGC=200" is kvinject with GOGC=200 in its environment.
	name, envs, _ := strings.Cut(server, "+")
	var env []string
	if envs != "" {
		env = strings.Split(envs, "+")
	}
	var args []string
	var ready func() error
	tlsReady := func() error {
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(webhookPort)), &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
		}
		return err
	}
	switch name {
	case "floor":
		args = []string{b.bins["floor"], "-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(webhookPort)), "-cert-dir", b.certDir}
		ready = tlsReady
	case "kvinject-static", "cr-floor":
		args = []string{b.bins["kvstatic"], "-port", strconv.Itoa(webhookPort), "-cert-dir", b.certDir,
			"-sa-client-id", benchClientID, "-tenant-id", benchTenant}
		if name == "cr-floor" {
			args = append(args, "-one-annotation")
		}
		ready = tlsReady
	case "kvinject":
		args = []string{b.bins["kvinject"], "webhook", "--agent-image=ghcr.io/kvinject/kvinject:bench", "--tenant-id=" + benchTenant,
			"--port=" + strconv.Itoa(webhookPort), "--cert-dir=" + b.certDir, "--metrics-bind-address=0",
			"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort), "--kubeconfig=" + b.kubeconfig}
		ready = func() error {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(probePort) + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("readyz: %s", resp.Status)
			}
			return tlsReady()
		}
	default:
		return nil, fmt.Errorf("unknown server %q", name)
	}
	args = append(args, extra...)
	if b.c.serverCPU != "" {
		args = append([]string{"taskset", "-c", b.c.serverCPU}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(append(os.Environ(), b.c.serverEnv...), env...)
	logFile, err := os.Create(filepath.Join(b.tmp, name+".log"))
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
		err := ready()
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
	expect := "kvinject-agent"
	if base, _, _ := strings.Cut(server, "+"); base == "floor" || base == "cr-floor" {
		expect = "kvinject.io~1status"
	}
	args := []string{b.self, "loadgen", "-url", fmt.Sprintf("https://127.0.0.1:%d/mutate-v1-pod", webhookPort),
		"-proto", proto, "-c", strconv.Itoa(conc), "-duration", d.String(), "-warmup", b.c.warmup.String(),
		"-pid", strconv.Itoa(pid), "-ca", filepath.Join(b.certDir, "tls.crt"), "-expect", expect}
	if b.c.loadCPU != "" {
		args = append([]string{"taskset", "-c", b.c.loadCPU}, args...)
	}
	cctx, cancel := context.WithTimeout(ctx, d+b.c.warmup+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("load generator: %v: %s", err, stderr.String())
	}
	var r result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("load generator output %q: %w", stdout.String(), err)
	}
	return r, nil
}

// profileStatic writes a CPU profile of kvinject-static under h2 c=16 load.
func (b *bench) profileStatic(ctx context.Context, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	p, err := b.startServer(ctx, "kvinject-static", "-cpuprofile", abs)
	if err != nil {
		return err
	}
	r, err := b.load(ctx, p.cmd.Process.Pid, "kvinject-static", "h2", 16, b.c.duration)
	p.stop()
	if err != nil {
		return err
	}
	logf("profiled %d requests (%.0f µs CPU each) into %s", r.Requests, r.CPUPerReqUs, abs)
	return nil
}

// startEnvtest runs kube-apiserver and etcd, creates the benchmark's
// namespace and ServiceAccount, and writes a kubeconfig for the webhook.
func (b *bench) startEnvtest(root string) (stop func(), err error) {
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
	if env.ControlPlane.GetAPIServer().Path == "" || env.ControlPlane.Etcd.Path == "" {
		return nil, errors.New("no Kubernetes binaries in bin/k8s: run make cluster-binaries, or pass -servers floor,kvinject-static")
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
	b.kubeconfig = filepath.Join(b.tmp, "kubeconfig")
	if err := os.WriteFile(b.kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{}); err != nil {
		return fail(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: benchSA, Namespace: benchNamespace,
		Annotations: map[string]string{"azure.workload.identity/client-id": benchClientID}}}
	if _, err := cs.CoreV1().ServiceAccounts(benchNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return fail(err)
	}
	return stop, nil
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
