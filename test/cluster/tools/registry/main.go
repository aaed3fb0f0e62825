// Command registry is the private container registry of the local test cluster: go-containerregistry's
// in-memory registry behind TLS and HTTP basic auth, standing in for a private mirror registry whose pull
// credential users keep in a kubernetes.io/dockerconfigjson Secret.
//
//	registry serve -addr 127.0.0.1:5000 -cert tls.crt -key tls.key -auth-file auth
//	registry push -tarball image.tar -ref 127.0.0.1:5000/kvinject/dbreader:e2e -auth-file auth -ca ca.crt
//
// The auth file holds one line, user:password. serve listens on 127.0.0.1 or ::1 only (TLS 1.2 or later),
// answers every request without those Basic credentials with 401 and a Basic challenge, as a real
// registry does (containerd then retries with the credentials the kubelet passed from the pod's
// imagePullSecrets), logs one line per request (never the credentials), keeps images in memory only
// (they are gone when it exits) and stops on SIGTERM or SIGINT.
//
// push loads a single-image docker-archive tarball (as written by mkimage), pushes it to -ref trusting
// only the -ca certificate, and prints the pushed manifest digest on stdout.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// realm is the realm of the Basic challenge.
const realm = "kvinject-registry"

const usage = `usage:
  registry serve -addr 127.0.0.1:5000 -cert tls.crt -key tls.key -auth-file auth
  registry push -tarball image.tar -ref 127.0.0.1:5000/REPO:TAG -auth-file auth -ca ca.crt`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveCmd(os.Args[2:])
	case "push":
		err = pushCmd(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func serveCmd(args []string) error {
	fs := flag.NewFlagSet("registry serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:5000", "listen address (host 127.0.0.1 or [::1] only)")
	cert := fs.String("cert", "", "TLS certificate (PEM, chain)")
	key := fs.String("key", "", "TLS private key (PEM)")
	authFile := fs.String("auth-file", "", "file holding one line user:password")
	_ = fs.Parse(args)
	if *cert == "" || *key == "" || *authFile == "" {
		return errors.New("registry serve: -cert, -key and -auth-file are required")
	}
	srv, ln, err := newServer(*addr, *cert, *key, *authFile, log.Default())
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Printf("registry: serving on https://%s", ln.Addr())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("registry serve: %w", err)
	}
	log.Printf("registry: stopped")
	return nil
}

// newServer checks the address, reads the credentials and the key pair, and listens. The caller
// serves with srv.ServeTLS(ln, "", "").
func newServer(addr, certFile, keyFile, authFile string, logger *log.Logger) (*http.Server, net.Listener, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, nil, err
	}
	user, pass, err := readAuthFile(authFile)
	if err != nil {
		return nil, nil, fmt.Errorf("registry serve: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("registry serve: key pair: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("registry serve: %w", err)
	}
	srv := &http.Server{
		Handler:           newHandler(user, pass, logger),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}
	return srv, ln, nil
}

// checkLoopback accepts only 127.0.0.1 and ::1 as the listen host.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("registry serve: -addr %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !(ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback)) {
		return fmt.Errorf("registry serve: -addr %q: refusing a non-loopback address (only 127.0.0.1 or [::1])", addr)
	}
	return nil
}

// readAuthFile reads the one line user:password. Errors never quote the file's content.
func readAuthFile(file string) (user, pass string, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("auth file: %w", err)
	}
	line := strings.TrimRight(string(b), "\r\n")
	user, pass, ok := strings.Cut(line, ":")
	if !ok || user == "" || pass == "" || strings.ContainsAny(line, "\r\n") {
		return "", "", fmt.Errorf("auth file %s: want one line user:password", file)
	}
	return user, pass, nil
}

// newHandler serves an in-memory registry to requests carrying the Basic credentials user:pass and
// logs one line per request to logger.
func newHandler(user, pass string, logger *log.Logger) http.Handler {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	wantUser, wantPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, given := r.BasicAuth()
		// Compare fixed-size hashes so that neither the length nor the content leaks through timing.
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) == 1
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:]) == 1
		creds := "none"
		switch {
		case given && userOK && passOK:
			creds = "valid"
		case given:
			creds = "invalid"
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		sw.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		if creds == "valid" {
			reg.ServeHTTP(sw, r)
		} else {
			unauthorized(sw)
		}
		logger.Printf("%s %s %s -> %d creds=%s", r.RemoteAddr, r.Method, r.URL.Path, sw.status, creds)
	})
}

// unauthorized answers as a distribution registry with htpasswd auth does.
func unauthorized(w http.ResponseWriter) {
	h := w.Header()
	h.Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", realm))
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}`+"\n")
}

// statusWriter records the response status for the log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func pushCmd(args []string) error {
	fs := flag.NewFlagSet("registry push", flag.ExitOnError)
	tarballPath := fs.String("tarball", "", "docker-archive tarball holding one image (e.g. from mkimage)")
	ref := fs.String("ref", "", "destination, e.g. 127.0.0.1:5000/kvinject/dbreader:e2e")
	authFile := fs.String("auth-file", "", "file holding one line user:password")
	caFile := fs.String("ca", "", "CA certificate (PEM) that signed the registry's certificate; the only one trusted")
	_ = fs.Parse(args)
	if *tarballPath == "" || *ref == "" || *authFile == "" || *caFile == "" {
		return errors.New("registry push: -tarball, -ref, -auth-file and -ca are required")
	}
	user, pass, err := readAuthFile(*authFile)
	if err != nil {
		return fmt.Errorf("registry push: %w", err)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("registry push: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := push(ctx, *tarballPath, *ref, user, pass, caPEM)
	if err != nil {
		return err
	}
	log.Printf("registry: pushed %s to %s", *tarballPath, *ref)
	fmt.Println(d)
	return nil
}

// push writes the single image of the tarball to ref and returns its manifest digest.
func push(ctx context.Context, tarballPath, ref, user, pass string, caPEM []byte) (v1.Hash, error) {
	dst, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("registry push: -ref: %w", err)
	}
	img, err := tarball.ImageFromPath(tarballPath, nil)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("registry push: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("registry push: %s: %w", tarballPath, err)
	}
	tr, err := caTransport(caPEM)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("registry push: %w", err)
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: user, Password: pass}),
	}
	if err := remote.Write(dst, img, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("registry push: %s: %w", dst, err)
	}
	return d, nil
}

// caTransport returns a transport that trusts only the certificates in caPEM and uses no proxy.
func caTransport(caPEM []byte) (*http.Transport, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("CA file: no PEM certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}
