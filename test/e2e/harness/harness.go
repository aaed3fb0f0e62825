package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// CacheTTL is the cache's --ttl on the local cluster: short, so that the
// tests see values go stale and a revocation take effect.
const CacheTTL = 30 * time.Second

// Names the harness uses on the cluster and in the emulator.
const (
	TenantID       = "11111111-2222-3333-4444-555555555555"
	ClientID       = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	Vault          = "homelab-kv"
	DBSecret       = "app-pgsql"
	DBUsername     = "superman"
	DBPassword     = "louiselane"
	EgressCAConfig = "kvinject-egress-ca" // ConfigMap with the emulator's CA, in each app namespace
	EgressCAKey    = "ca.crt"
	KvinjectNS     = "kvinject-system"
	WebhookDeploy  = "kvinject-webhook"
	// WebhookCertSecret holds the self-signed CA (ca-bundle.crt) that signs
	// both the webhook's and the cache's certificates.
	WebhookCertSecret = "kvinject-webhook-cert"
	// CacheService and CacheDeploy are the cluster cache's (manifests/with-cache).
	CacheService    = "kvinject-cache"
	CacheDeploy     = "kvinject-cache"
	CacheReplicas   = 2
	ImageRepo       = "kvinject.local/kvinject"
	AppImageRepo    = "kvinject.local/dbreader"
	emulatorPIDName = "extra-kvinject-emulator"
)

// Cluster is the running local cluster, as test/cluster/up.sh describes it
// in STATE_DIR/env.
type Cluster struct {
	Root         string // the repository
	StateDir     string
	Kubeconfig   string
	IssuerURL    string
	IssuerCAFile string
	NodeIP       string
	// Registry is the mirror registry (host:port on loopback, TLS and
	// basic auth), RegistryCAFile its CA, RegistryAuthFile its user:password.
	Registry, RegistryCAFile, RegistryAuthFile string
	// EmulatorPort is the emulator's proxy port on NodeIP, reserved by
	// up.sh: the kubelet's credential provider is configured with it.
	EmulatorPort string
	Kubectl      string
	Config       *rest.Config
	Client       kubernetes.Interface
}

// StateDir is where test/cluster keeps the cluster's state.
func StateDir(root string) string {
	if d := os.Getenv("STATE_DIR"); d != "" {
		return d
	}
	return filepath.Join(root, "_out", "cluster")
}

// Open reads the running cluster's env file.
func Open(root string) (*Cluster, error) {
	state := StateDir(root)
	env, err := readEnv(filepath.Join(state, "env"))
	if err != nil {
		return nil, fmt.Errorf("the local cluster is not up (make cluster-up): %w", err)
	}
	c := &Cluster{
		Root: root, StateDir: state, Kubeconfig: env["KUBECONFIG"], IssuerURL: env["ISSUER_URL"],
		IssuerCAFile: env["ISSUER_CA_FILE"], NodeIP: env["NODE_IP"],
		Registry: env["REGISTRY"], RegistryCAFile: env["REGISTRY_CA_FILE"], RegistryAuthFile: env["REGISTRY_AUTH_FILE"],
		EmulatorPort: env["EMULATOR_PORT"],
	}
	for k, v := range map[string]string{"KUBECONFIG": c.Kubeconfig, "ISSUER_URL": c.IssuerURL, "ISSUER_CA_FILE": c.IssuerCAFile, "NODE_IP": c.NodeIP,
		"REGISTRY": c.Registry, "REGISTRY_CA_FILE": c.RegistryCAFile, "REGISTRY_AUTH_FILE": c.RegistryAuthFile, "EMULATOR_PORT": c.EmulatorPort} {
		if v == "" {
			return nil, fmt.Errorf("%s/env has no %s", state, k)
		}
	}
	kubectls, _ := filepath.Glob(filepath.Join(root, "bin/k8s/v*/kubectl"))
	if len(kubectls) == 0 {
		return nil, errors.New("no kubectl under bin/k8s (make cluster-binaries)")
	}
	c.Kubectl = kubectls[len(kubectls)-1]
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", c.Kubeconfig, err)
	}
	c.Config.QPS, c.Config.Burst = 50, 100
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// readEnv parses the `export K=V` or `K=V` lines of a sourceable file.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `'`)
		}
		env[k] = v
	}
	return env, sc.Err()
}

// Kubectl runs kubectl against the cluster and returns its standard output;
// on failure the error holds its standard error.
func (c *Cluster) KubectlOut(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Emulator is the Entra ID and Key Vault emulator running on the host.
type Emulator struct {
	ProxyURL string `json:"proxyURL"`
	CAFile   string `json:"caFile"`
	AdminURL string `json:"adminURL"`
	LogFile  string `json:"-"`
	PID      int    `json:"-"`
}

// StartEmulator runs `kvinject emulator` (binary at bin) in the background on
// the node's address and the port up.sh reserved, so pods and the kubelet's
// credential provider reach it, trusting the cluster's issuer site.
// It outlives the caller (the demo leaves it up); down.sh stops it.
func (c *Cluster) StartEmulator(ctx context.Context, bin string, config []byte) (*Emulator, error) {
	dir := filepath.Join(c.StateDir, "emulator")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c.StopEmulator()
	cfgPath, statePath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "state.json")
	os.Remove(statePath)
	if err := os.WriteFile(cfgPath, config, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "emulator.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "emulator", "--config", cfgPath, "--listen", c.NodeIP+":"+c.EmulatorPort,
		"--admin-listen", "127.0.0.1:0", "--ca-dir", filepath.Join(dir, "ca"), "--state-file", statePath,
		"--issuer-ca-file", c.IssuerCAFile, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // not killed with the caller's terminal
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start emulator: %w", err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() //nolint:errcheck // reaped here while the caller lives; down.sh stops it later
	if err := os.WriteFile(filepath.Join(c.StateDir, "pids", emulatorPIDName+".pid"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(statePath)
		if err == nil {
			var e Emulator
			if err := json.Unmarshal(b, &e); err == nil && e.ProxyURL != "" {
				e.LogFile, e.PID = logPath, pid
				return &e, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logTail, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("emulator did not start in 20s:\n%s", lastLines(string(logTail), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StopEmulator stops an emulator a previous run left.
func (c *Cluster) StopEmulator() {
	pidFile := filepath.Join(c.StateDir, "pids", emulatorPIDName+".pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if pid > 0 && bytes.Contains(cmdline, []byte(c.StateDir)) {
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50; i++ {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	os.Remove(pidFile)
}

// Admin calls the emulator's admin API.
func (e *Emulator) Admin(ctx context.Context, method, path string, body any, out any) error {
	var r *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	} else {
		r = bytes.NewReader(nil)
	}
	req, err := newRequest(ctx, method, e.AdminURL+path, r)
	if err != nil {
		return err
	}
	return doJSON(req, out)
}

// WebhookName is the kvinject webhook's name in its MutatingWebhookConfiguration.
const WebhookName = "pods.kvinject.io"

// WebhookCalls returns how many times the API server has called the kvinject
// webhook for pod creations, from its own
// apiserver_admission_webhook_admission_duration_seconds histogram.
func (c *Cluster) WebhookCalls(ctx context.Context) (float64, error) {
	b, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("scrape the API server: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("parse the API server's metrics: %w", err)
	}
	total := 0.0
	for _, m := range families["apiserver_admission_webhook_admission_duration_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["name"] == WebhookName && labels["operation"] == "CREATE" {
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total, nil
}
