package azemu

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

func (e *Emulator) startProxy() error {
	ln, err := net.Listen("tcp", e.opts.ProxyAddr)
	if err != nil {
		return fmt.Errorf("azemu: proxy listener: %w", err)
	}
	e.proxyURL = "http://" + ln.Addr().String()
	e.inner = newChanListener(ln.Addr())
	// The outer server speaks plain HTTP/1.1 and only answers CONNECT.
	outer := &http.Server{
		Handler:           http.HandlerFunc(e.serveConnect),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slogErrorLog(e.log),
	}
	e.serve(outer, ln, false)
	// The inner server terminates TLS for the tunnels (with h2 via ALPN)
	// and runs the same handler as direct mode.
	inner := &http.Server{
		Handler:           e.handler(),
		TLSConfig:         e.tlsConfig(),
		ConnContext:       e.connContext,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slogErrorLog(e.log),
	}
	e.serve(inner, e.inner, true)
	return nil
}

// hostKind classifies a host name the emulator impersonates.
type hostKind int

const (
	hostNone hostKind = iota
	hostLogin
	hostVault
)

// classifyHost returns what host is and, for vault hosts, the vault name
// and cloud.
func classifyHost(host string) (kind hostKind, vault, cloud string) {
	h := hostKey(host)
	for _, name := range cloudNames() {
		c := mustCloud(name)
		if h == c.loginHost {
			return hostLogin, "", name
		}
		if label, ok := strings.CutSuffix(h, c.vaultSuffix); ok && label != "" && !strings.Contains(label, ".") {
			return hostVault, label, name
		}
	}
	return hostNone, "", ""
}

// serveConnect answers CONNECT for the impersonated hosts only. The
// emulator never dials the requested host: the tunnel ends here.
func (e *Emulator) serveConnect(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, why string) {
		e.stats.refused.Add(1)
		e.log.Warn("proxy refused", "method", r.Method, "host", r.Host, "status", status, "reason", why)
		http.Error(w, "azemu: "+why, status)
	}
	if r.Method != http.MethodConnect {
		refuse(http.StatusForbidden, "only CONNECT to Entra ID and Key Vault hosts is served")
		return
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != "443" {
		refuse(http.StatusForbidden, fmt.Sprintf("CONNECT to %q is not allowed", r.Host))
		return
	}
	kind, vault, cloud := classifyHost(host)
	switch kind {
	case hostNone:
		refuse(http.StatusForbidden, fmt.Sprintf("CONNECT to %q is not allowed", r.Host))
		return
	case hostVault:
		// An unknown vault has no DNS record in Azure; a proxy reports
		// that as a bad gateway.
		e.state.mu.RLock()
		v, ok := e.state.vaults[vault]
		e.state.mu.RUnlock()
		if !ok || v.cloud != cloud {
			refuse(http.StatusBadGateway, fmt.Sprintf("no such vault host %q", host))
			return
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		refuse(http.StatusInternalServerError, "cannot hijack")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		e.log.Error("proxy hijack", "err", err)
		return
	}
	_, err = brw.WriteString("HTTP/1.1 200 Connection Established\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = conn.Close()
		return
	}
	e.stats.connects.Add(1)
	e.stats.connections.Add(1)
	tc, _ := conn.(*net.TCPConn)
	ec := &emuConn{Conn: conn, e: e, tcp: tc, br: brw.Reader, target: hostKey(host)}
	// r.Context is cancelled once this handler returns after a hijack, so
	// hand the tunnel over with the listener's own lifetime.
	if !e.inner.push(r.Context(), ec) {
		_ = conn.Close()
	}
}
