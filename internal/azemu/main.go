package azemu

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// State is what Main prints and writes to --state-file, so scripts can
// point HTTPS_PROXY and SSL_CERT_FILE at the emulator.
type State struct {
	ProxyURL  string            `json:"proxyURL"`
	CAFile    string            `json:"caFile"`
	AdminURL  string            `json:"adminURL,omitempty"`
	DirectURL string            `json:"directURL"`
	Vaults    map[string]string `json:"vaults,omitempty"` // name -> direct-mode URL
	PID       int               `json:"pid"`
}

// Main runs the emulator as a command until ctx is done (wire it as
// "kvinject emulator"). It returns the process exit code: 0 on a clean
// stop, 1 on a runtime failure, 2 on bad flags or config.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath  = fs.String("config", "", "YAML or JSON config file (required)")
		listen      = fs.String("listen", "127.0.0.1:0", "HTTPS_PROXY listen address: loopback, or this machine's own address for a local cluster's pods")
		caDir       = fs.String("ca-dir", "", "directory for ca.crt/ca.key, kept across restarts (default: a temporary directory)")
		adminListen = fs.String("admin-listen", "127.0.0.1:0", "admin API listen address (loopback only; empty disables)")
		latency     = fs.Duration("latency", 0, "latency added to every request")
		connLatency = fs.Duration("conn-latency", 0, "latency added to every new connection")
		bandwidth   = fs.String("bandwidth", "0", "bandwidth limit per direction in bits/s (suffix k or M allowed, e.g. 200k); 0 is unlimited")
		issuerCA    = fs.String("issuer-ca-file", "", "PEM CA bundle for reaching OIDC issuers (e.g. the kube-apiserver CA)")
		stateFile   = fs.String("state-file", "", "write proxy URL, CA file and admin URL as JSON to this file")
		seed        = fs.Uint64("seed", 1, "seed for random fault injection")
		lifetime    = fs.Duration("token-lifetime", 3599*time.Second, "access token lifetime (>= 10m)")
		logFormat   = fs.String("log-format", "text", "log format: text or json")
		resolve     = hostMap{}
	)
	fs.Var(resolve, "issuer-resolve", "HOST:PORT=ADDR: dial ADDR when fetching issuer metadata from HOST:PORT (repeatable), e.g. for an issuer name that only resolves inside the cluster")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "emulator: --config FILE is required and no arguments are accepted")
		fs.Usage()
		return 2
	}
	bps, err := parseBandwidth(*bandwidth)
	if err != nil {
		fmt.Fprintf(stderr, "emulator: --bandwidth: %v\n", err)
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "emulator: %v\n", err)
		return 2
	}
	if *issuerCA != "" {
		if cfg.IssuerTrust.CAFile != "" {
			fmt.Fprintln(stderr, "emulator: --issuer-ca-file and issuerTrust.caFile are both set; using the flag")
		}
		cfg.IssuerTrust.CAFile = *issuerCA
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	} else if *logFormat != "text" {
		fmt.Fprintf(stderr, "emulator: --log-format must be text or json\n")
		return 2
	}
	emu, err := Start(Options{
		Config:        cfg,
		ProxyAddr:     *listen,
		AdminAddr:     *adminListen,
		CADir:         *caDir,
		Logger:        slog.New(h),
		Seed:          *seed,
		TokenLifetime: *lifetime,
		IssuerHosts:   resolve,
		Knobs:         Knobs{RequestLatency: *latency, ConnLatency: *connLatency, BandwidthBPS: bps},
	})
	if err != nil {
		fmt.Fprintf(stderr, "emulator: %v\n", err)
		if errors.Is(err, ErrInvalidConfig) {
			return 2
		}
		return 1
	}
	defer emu.Close()
	st := State{ProxyURL: emu.ProxyURL(), CAFile: emu.CAFile(), AdminURL: emu.AdminURL(), DirectURL: emu.DirectURL(), Vaults: map[string]string{}, PID: os.Getpid()}
	for _, v := range cfg.Vaults {
		st.Vaults[v.Name], _ = emu.DirectVaultURL(v.Name)
	}
	fmt.Fprintf(stdout, "proxy: %s\nca-file: %s\nadmin: %s\ndirect: %s\n", st.ProxyURL, st.CAFile, st.AdminURL, st.DirectURL)
	fmt.Fprintf(stdout, "export HTTPS_PROXY=%s SSL_CERT_FILE=%s\n", st.ProxyURL, st.CAFile)
	if *stateFile != "" {
		if err := writeState(*stateFile, st); err != nil {
			fmt.Fprintf(stderr, "emulator: %v\n", err)
			return 1
		}
	}
	<-ctx.Done()
	if err := emu.Close(); err != nil {
		fmt.Fprintf(stderr, "emulator: close: %v\n", err)
		return 1
	}
	return 0
}

// writeState writes atomically so a script polling for the file never
// reads half of it.
func writeState(path string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".azemu-state-*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

func parseBandwidth(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1000_000, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a non-negative number of bits/s", s)
	}
	return n * mult, nil
}

// hostMap is a repeatable HOST:PORT=ADDR flag.
type hostMap map[string]string

func (m hostMap) String() string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (m hostMap) Set(s string) error {
	from, to, ok := strings.Cut(s, "=")
	if !ok || from == "" || to == "" {
		return fmt.Errorf("want HOST:PORT=ADDR, got %q", s)
	}
	if _, _, err := net.SplitHostPort(from); err != nil {
		return fmt.Errorf("%q: %w", from, err)
	}
	if _, _, err := net.SplitHostPort(to); err != nil {
		return fmt.Errorf("%q: %w", to, err)
	}
	m[strings.ToLower(from)] = to
	return nil
}
