package keyvault

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"time"
)

// dialer opens TLS connections itself, through HTTPS_PROXY when the
// environment says so, so that the agent can open the connection to a vault
// while the token exchange runs (warm) and hand it to the HTTP transport on
// its first request. net/http cannot do that: with a proxy configured it
// runs the CONNECT and the handshake itself, only when a request needs them.
//
// It honours HTTPS_PROXY, NO_PROXY (http.ProxyFromEnvironment) and
// SSL_CERT_FILE / SSL_CERT_DIR (the system roots) like any Go program.
type dialer struct {
	proxy   func(*http.Request) (*url.URL, error)
	tls     *tls.Config // template; ServerName set per dial
	net     net.Dialer
	mu      sync.Mutex
	warm    map[string]*warmConn // by host:port
	stopped bool
}

type warmConn struct {
	done chan struct{}
	conn net.Conn
	err  error
}

// newDialer returns a dialer trusting roots, or the system roots when nil.
func newDialer(roots *x509.CertPool) *dialer {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, RootCAs: roots,
		// The refresh sidecar reconnects every interval: resuming the
		// session spares the link the certificate chain.
		ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	return &dialer{
		proxy: http.ProxyFromEnvironment,
		tls:   cfg,
		net:   net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		warm:  map[string]*warmConn{},
	}
}

// Warm starts connecting to host:443 in the background; the next DialTLS to
// that address takes the connection (waiting for it if still in progress).
func (d *dialer) Warm(ctx context.Context, host string) {
	addr := net.JoinHostPort(host, "443")
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.warm[addr] != nil {
		return
	}
	w := &warmConn{done: make(chan struct{})}
	d.warm[addr] = w
	go func() {
		defer close(w.done)
		w.conn, w.err = d.dialTLS(ctx, addr)
	}()
}

// DialTLSContext is the transport's TLS dialer.
func (d *dialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	w := d.warm[addr]
	delete(d.warm, addr)
	d.mu.Unlock()
	if w != nil {
		select {
		case <-w.done:
			if w.err == nil {
				return w.conn, nil
			}
			// The warm-up failed (maybe its context ended): dial afresh.
		case <-ctx.Done():
			go func() {
				<-w.done
				if w.conn != nil {
					w.conn.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
	return d.dialTLS(ctx, addr)
}

// Close closes warm connections nobody took.
func (d *dialer) Close() {
	d.mu.Lock()
	ws := d.warm
	d.warm, d.stopped = map[string]*warmConn{}, true
	d.mu.Unlock()
	for _, w := range ws {
		go func() {
			<-w.done
			if w.conn != nil {
				w.conn.Close()
			}
		}()
	}
}

func (d *dialer) dialTLS(ctx context.Context, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	proxyURL, err := d.proxy(&http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "https", Host: addr}, Header: http.Header{}})
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", addr, err)
	}
	var conn net.Conn
	if proxyURL == nil {
		conn, err = d.net.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.connect(ctx, proxyURL, addr)
	}
	if err != nil {
		return nil, err
	}
	cfg := d.tls.Clone()
	cfg.ServerName = host
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, &net.OpError{Op: "tls handshake", Net: "tcp", Addr: conn.RemoteAddr(), Err: err}
	}
	return tc, nil
}

// connect opens a tunnel to addr through an http:// or https:// proxy.
func (d *dialer) connect(ctx context.Context, proxy *url.URL, addr string) (net.Conn, error) {
	paddr := proxy.Host
	if proxy.Port() == "" {
		port := "80"
		if proxy.Scheme == "https" {
			port = "443"
		}
		paddr = net.JoinHostPort(proxy.Hostname(), port)
	}
	conn, err := d.net.DialContext(ctx, "tcp", paddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy.Redacted(), err)
	}
	switch proxy.Scheme {
	case "http":
	case "https":
		tc := tls.Client(conn, &tls.Config{ServerName: proxy.Hostname(), MinVersion: tls.VersionTLS12, RootCAs: d.tls.RootCAs})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("proxy %s: %w", proxy.Redacted(), err)
		}
		conn = tc
	default:
		conn.Close()
		return nil, fmt.Errorf("proxy %s: scheme %q is not supported (use http:// or https://)", proxy.Redacted(), proxy.Scheme)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxy.Redacted(), addr, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", proxy.Redacted(), addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("proxy %s refused CONNECT %s: %s", proxy.Redacted(), addr, resp.Status)
	}
	if br.Buffered() > 0 {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: unexpected data after the response", proxy.Redacted(), addr)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// newTransport returns the one HTTP transport of the agent: TLS through the
// dialer, HTTP/2 when the path offers it, and up to maxConns connections
// per host when it does not.
//
// Over HTTP/2 one connection per host carries every request. Over
// HTTP/1.1, which a TLS-inspecting proxy may impose, each request in flight
// needs its own connection, or the fetches run one after another. Which of
// the two a host speaks is known once its first connection is up, so the
// first request to a host goes alone and the rest wait until it holds its
// connection: by then an HTTP/2 connection is pooled and they share it, and
// over HTTP/1.1 they open their own.
func newTransport(d *dialer, maxConns int) *hostGatedTransport {
	return &hostGatedTransport{
		Transport: &http.Transport{
			Proxy:                 nil, // the dialer tunnels through HTTPS_PROXY itself
			DialTLSContext:        d.DialTLSContext,
			DialContext:           d.net.DialContext,
			ForceAttemptHTTP2:     true,
			MaxConnsPerHost:       maxConns,
			MaxIdleConns:          maxConns,
			MaxIdleConnsPerHost:   maxConns,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		first: map[string]chan struct{}{},
	}
}

// hostGatedTransport lets one request per host through until that request
// holds a connection (httptrace GotConn) or ends.
type hostGatedTransport struct {
	*http.Transport
	mu    sync.Mutex
	first map[string]chan struct{} // by host; closed once the first request has its connection
}

func (t *hostGatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	t.mu.Lock()
	ready, seen := t.first[host]
	if !seen {
		ready = make(chan struct{})
		t.first[host] = ready
	}
	t.mu.Unlock()
	if seen {
		select {
		case <-ready:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		return t.Transport.RoundTrip(req)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(ready) }) }
	defer release() // a failed first request lets the others try
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { release() }})
	return t.Transport.RoundTrip(req.WithContext(ctx))
}
