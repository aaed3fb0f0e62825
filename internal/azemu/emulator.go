package azemu

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configures an Emulator. Only Config is required.
type Options struct {
	Config Config
	// ProxyAddr is where the HTTPS_PROXY listener binds; default
	// "127.0.0.1:0". It must be a loopback address or, so that a local
	// cluster's pods can use it, an address of this machine's own
	// interfaces (the node IP or the pod bridge's gateway).
	ProxyAddr string
	// AdminAddr, when set, starts the admin HTTP API there (loopback only).
	AdminAddr string
	// CADir holds ca.crt and ca.key; they are created when missing, so a
	// restart keeps the CA clients trust. Empty: a temporary directory,
	// removed by Close.
	CADir string
	// Logger receives one line per request. Secret values, assertions and
	// tokens are never logged. Nil discards.
	Logger *slog.Logger
	// TokenLifetime is expires_in of issued tokens; default 3599s, at
	// least 600s (MSAL neither caches nor serves tokens expiring within
	// five minutes).
	TokenLifetime time.Duration
	// PageSize is the default list page size; default 25 (Key Vault's).
	PageSize int
	// Seed feeds the fault-rate random generator.
	Seed uint64
	// JWKSCacheTTL is how long issuer keys are cached; default 5 minutes.
	// FlushJWKSCache forces a refetch.
	JWKSCacheTTL time.Duration
	// ClockSkew tolerated on assertion nbf/exp; default 5 minutes, the
	// Microsoft.IdentityModel default.
	ClockSkew time.Duration
	// IssuerCAPEM is a PEM bundle trusted, with the system roots and
	// Config.IssuerTrust, when fetching issuer metadata (e.g. an
	// oidctest.Issuer's CAPEM).
	IssuerCAPEM []byte
	// IssuerHosts maps an issuer "host:port" (lower case) to the address to
	// dial, for issuers or jwks_uri hosts whose names do not resolve here
	// (e.g. kubernetes.default.svc). TLS still verifies the original name.
	IssuerHosts map[string]string
	// Knobs are the initial network and fault knobs.
	Knobs Knobs
}

// ErrUnknownVault, ErrUnknownSecret and ErrUnknownIdentity are returned by
// the run-time mutation methods.
var (
	ErrUnknownVault    = errors.New("azemu: unknown vault")
	ErrUnknownSecret   = errors.New("azemu: unknown secret")
	ErrUnknownIdentity = errors.New("azemu: unknown identity")
)

// Emulator is a running Entra ID + Key Vault emulator. Its methods are safe
// for concurrent use.
type Emulator struct {
	opts   Options
	log    *slog.Logger
	ca     *authority
	caFile string
	tmpDir string
	tokKey *ecdsa.PrivateKey

	state state
	stats *stats

	knobMu sync.RWMutex
	knob   Knobs
	faults faultPlan
	rng    *mrand.Rand

	issuerClient *http.Client
	jwks         jwksCache

	proxyURL  string
	adminURL  string
	directURL map[string]string // lower vault name -> https://127.0.0.1:PORT
	directAny string            // a direct URL serving Entra (and the first vault)
	servers   []*http.Server
	inner     *chanListener
	closeOnce sync.Once
}

// Start validates opts and starts the listeners.
func Start(opts Options) (*Emulator, error) {
	if err := opts.complete(); err != nil {
		return nil, err
	}
	e := &Emulator{
		opts:      opts,
		log:       opts.Logger,
		stats:     newStats(),
		knob:      opts.Knobs,
		faults:    faultPlan{script: map[Class][]Fault{}},
		rng:       mrand.New(mrand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		directURL: map[string]string{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	ok := false
	defer func() {
		if !ok {
			_ = e.Close()
		}
	}()
	if err := e.loadKeys(); err != nil {
		return nil, err
	}
	if err := e.state.load(opts.Config); err != nil {
		return nil, err
	}
	var err error
	if e.issuerClient, err = e.newIssuerClient(); err != nil {
		return nil, err
	}
	e.jwks.entries = map[string]*jwksEntry{}

	if err := e.listen(); err != nil {
		return nil, err
	}
	ok = true
	e.log.Info("azemu started", "proxy", e.proxyURL, "caFile", e.caFile, "direct", e.directAny, "admin", e.adminURL)
	return e, nil
}

// complete fills in the defaults of opts and checks them.
func (opts *Options) complete() error {
	if err := opts.Config.Validate(); err != nil {
		return err
	}
	if opts.ProxyAddr == "" {
		opts.ProxyAddr = "127.0.0.1:0"
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = 3599 * time.Second
	}
	if opts.TokenLifetime < 600*time.Second {
		return fmt.Errorf("%w: TokenLifetime %v is below 600s; MSAL would not cache the token", ErrInvalidConfig, opts.TokenLifetime)
	}
	if opts.PageSize == 0 {
		opts.PageSize = 25
	}
	if opts.PageSize < 1 || opts.PageSize > 25 {
		return fmt.Errorf("%w: PageSize %d not in 1..25", ErrInvalidConfig, opts.PageSize)
	}
	if opts.JWKSCacheTTL == 0 {
		opts.JWKSCacheTTL = 5 * time.Minute
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = 5 * time.Minute
	}
	if opts.ProxyAddr != "" {
		if err := requireLocal(opts.ProxyAddr); err != nil {
			return err
		}
	}
	if opts.AdminAddr != "" {
		if err := requireLoopback(opts.AdminAddr); err != nil {
			return err
		}
	}
	return nil
}

// loadKeys loads (or creates) the CA in opts.CADir, a temporary directory
// when empty, and makes the token signing key.
func (e *Emulator) loadKeys() error {
	dir := e.opts.CADir
	if dir == "" {
		d, err := os.MkdirTemp("", "azemu-ca-")
		if err != nil {
			return fmt.Errorf("azemu: %w", err)
		}
		dir, e.tmpDir = d, d
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("azemu: CA dir: %w", err)
	}
	ca, err := loadOrCreateCA(dir)
	if err != nil {
		return err
	}
	e.ca = ca
	e.caFile = filepath.Join(dir, caCertFile)
	if e.tokKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return fmt.Errorf("azemu: token key: %w", err)
	}
	return nil
}

// listen starts the proxy, the direct listeners (Entra ID's, then each
// vault's) and the admin API.
func (e *Emulator) listen() error {
	if err := e.startProxy(); err != nil {
		return err
	}
	if err := e.startDirect(""); err != nil {
		return err
	}
	for _, v := range e.opts.Config.Vaults {
		if err := e.startDirect(v.Name); err != nil {
			return err
		}
	}
	if e.opts.AdminAddr != "" {
		if err := e.startAdmin(); err != nil {
			return err
		}
	}
	return nil
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %w", ErrInvalidConfig, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: address %q is not loopback; the emulator serves fake credentials and must not be reachable from elsewhere", ErrInvalidConfig, addr)
	}
	return nil
}

// requireLocal accepts loopback and the addresses of this machine's own
// interfaces, never a wildcard: the proxy must not answer other machines.
func requireLocal(addr string) error {
	if requireLoopback(addr) == nil {
		return nil
	}
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if ip != nil && !ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: address %q is neither loopback nor an address of this machine; the emulator serves fake credentials and must not be reachable from elsewhere", ErrInvalidConfig, addr)
}

func (e *Emulator) serve(srv *http.Server, ln net.Listener, tlsOn bool) {
	e.servers = append(e.servers, srv)
	go func() {
		var err error
		if tlsOn {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("azemu server stopped", "err", err)
		}
	}()
}

func (e *Emulator) connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ec, ok := c.(*emuConn); ok {
		return context.WithValue(ctx, connKey{}, ec)
	}
	return ctx
}

type connKey struct{}

func (e *Emulator) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			ec, _ := hello.Conn.(*emuConn)
			name := hello.ServerName
			switch {
			case ec != nil && ec.target == "":
				// Direct mode: clients dial an IP, which sends no SNI.
				name = "127.0.0.1"
			case name == "" && ec != nil:
				name = ec.target
			case ec != nil && !strings.EqualFold(name, ec.target):
				return nil, fmt.Errorf("azemu: SNI %q does not match CONNECT host %q", name, ec.target)
			}
			return e.ca.leaf(strings.ToLower(name))
		},
	}
}

func (e *Emulator) startDirect(vault string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("azemu: direct listener: %w", err)
	}
	u := "https://" + ln.Addr().String()
	if vault == "" {
		e.directAny = u
	} else {
		e.directURL[strings.ToLower(vault)] = u
	}
	srv := &http.Server{
		Handler:           e.handler(),
		TLSConfig:         e.tlsConfig(),
		ConnContext:       e.connContext,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slogErrorLog(e.log),
	}
	e.serve(srv, &directListener{Listener: ln, e: e, vault: vault}, true)
	return nil
}

// Close stops every listener and removes a temporary CA directory.
func (e *Emulator) Close() error {
	var errs []error
	e.closeOnce.Do(func() {
		if e.inner != nil {
			_ = e.inner.Close()
		}
		// Close, not Shutdown: HTTP/2 clients keep connections open and a
		// graceful shutdown would wait for them; an emulator has no
		// in-flight work worth finishing.
		for _, s := range e.servers {
			_ = s.Close()
		}
		if e.issuerClient != nil {
			e.issuerClient.CloseIdleConnections()
		}
		if e.tmpDir != "" {
			errs = append(errs, os.RemoveAll(e.tmpDir))
		}
	})
	return errors.Join(errs...)
}

// ProxyURL is the HTTPS_PROXY value, http://127.0.0.1:PORT.
func (e *Emulator) ProxyURL() string { return e.proxyURL }

// CAFile is the path of the emulator CA's PEM (for SSL_CERT_FILE).
func (e *Emulator) CAFile() string { return e.caFile }

// CAPEM returns the emulator CA certificate in PEM.
func (e *Emulator) CAPEM() []byte { return slices.Clone(e.ca.pem) }

// CertPool returns a pool holding only the emulator CA.
func (e *Emulator) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca.cert)
	return p
}

// AdminURL is the admin API base URL, or "" when not enabled.
func (e *Emulator) AdminURL() string { return e.adminURL }

// DirectURL is a direct-mode base URL (https://127.0.0.1:PORT) serving the
// Entra ID endpoints; use it as the authority host with
// DisableInstanceDiscovery.
func (e *Emulator) DirectURL() string { return e.directAny }

// DirectVaultURL is the direct-mode URL of a vault: each vault has its own
// port, because the SDK parses secret IDs as /secrets/NAME/VERSION from the
// URL root and an IP has no vault name in it. The URL serves the Entra ID
// endpoints too. Use DisableChallengeResourceVerification with it.
func (e *Emulator) DirectVaultURL(vault string) (string, error) {
	u, ok := e.directURL[strings.ToLower(vault)]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	return u, nil
}

// VaultURL is the real-cloud URL of a configured vault, e.g.
// https://homelab-kv.vault.azure.net, to use through the proxy.
func (e *Emulator) VaultURL(vault string) (string, error) {
	e.state.mu.RLock()
	defer e.state.mu.RUnlock()
	v, ok := e.state.vaults[strings.ToLower(vault)]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownVault, vault)
	}
	return "https://" + v.name + mustCloud(v.cloud).vaultSuffix, nil
}

// ProxyTransport returns a new transport that tunnels every request
// through the emulator's proxy and trusts only its CA: the same as setting
// HTTPS_PROXY and SSL_CERT_FILE, without touching the process environment.
func (e *Emulator) ProxyTransport() *http.Transport {
	pu, _ := url.Parse(e.proxyURL)
	return &http.Transport{
		Proxy:             http.ProxyURL(pu),
		TLSClientConfig:   &tls.Config{RootCAs: e.CertPool(), MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
}

// DirectTransport returns a new transport trusting only the emulator CA,
// with no proxy, for direct mode.
func (e *Emulator) DirectTransport() *http.Transport {
	return &http.Transport{
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{RootCAs: e.CertPool(), MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
}

func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

// hostKey normalises host names and ports for comparisons.
func hostKey(h string) string { return strings.ToLower(strings.TrimSuffix(h, ".")) }
