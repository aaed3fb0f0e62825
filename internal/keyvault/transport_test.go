package keyvault

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
)

// throughEmulator is the agent's dialer and transport reaching the emulator
// as HTTPS_PROXY, closed when the test ends.
func throughEmulator(t *testing.T) (*azemu.Emulator, *dialer, *hostGatedTransport, context.Context) {
	t.Helper()
	emu, err := azemu.Start(azemu.Options{Config: azemu.Config{
		Tenants: []azemu.Tenant{{ID: testTenant}},
		Vaults:  []azemu.Vault{{Name: "homelab-kv", Tenant: testTenant}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	proxy, _ := url.Parse(emu.ProxyURL())
	d := newDialer(emu.CertPool())
	d.proxy = http.ProxyURL(proxy)
	tr := newTransport(d, 50) // the agent's default concurrency
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(func() {
		cancel()
		tr.CloseIdleConnections()
		d.Close()
	})
	return emu, d, tr, ctx
}

func TestDialerWarmConnectionIsReused(t *testing.T) {
	emu, d, tr, ctx := throughEmulator(t)

	d.Warm(ctx, "homelab-kv.vault.azure.net")
	// Several requests at once: one connection, HTTP/2.
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://homelab-kv.vault.azure.net/secrets/x/?api-version=2026-04-01", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusUnauthorized {
					err = &url.Error{Op: resp.Proto, URL: resp.Status}
				}
			}
			errs <- err
		}()
	}
	for range 5 {
		if err := <-errs; err != nil {
			t.Errorf("request: %v (want HTTP/2 and the 401 challenge)", err)
		}
	}
	if st := emu.Stats(); st.ProxyConnects != 1 || st.Connections != 1 {
		t.Errorf("%d tunnels, %d TLS connections; want the warm one only", st.ProxyConnects, st.Connections)
	}

	// A host the proxy refuses: the CONNECT status is reported.
	_, err := d.DialTLSContext(ctx, "tcp", "example.com:443")
	if err == nil || !strings.Contains(err.Error(), "refused CONNECT example.com:443") {
		t.Errorf("dial through a refusing proxy: %v", err)
	}
}

// TestTransportFirstConnectionShared: requests that start together before
// any connection exists still share one HTTP/2 connection.
func TestTransportFirstConnectionShared(t *testing.T) {
	emu, _, tr, ctx := throughEmulator(t)

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://homelab-kv.vault.azure.net/secrets/x/?api-version=2026-04-01", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Errorf("%s, want HTTP/2", resp.Proto)
			}
		})
	}
	wg.Wait()
	if st := emu.Stats(); st.Connections != 1 {
		t.Errorf("%d TLS connections for 20 requests over HTTP/2, want 1", st.Connections)
	}
}

// TestTransportParallelOverHTTP1: where the path only speaks HTTP/1.1 (a
// TLS-inspecting proxy), requests run side by side on several connections.
func TestTransportParallelOverHTTP1(t *testing.T) {
	const delay = 300 * time.Millisecond
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS() // HTTP/1.1 only: EnableHTTP2 is not set
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	d := newDialer(pool)
	d.proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	defer d.Close()
	tr := newTransport(d, 20)
	defer tr.CloseIdleConnections()

	start := time.Now()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.ProtoMajor != 1 {
				t.Errorf("%s, want HTTP/1.1", resp.Proto)
			}
		})
	}
	wg.Wait()
	// One after another would take 20 x 300 ms = 6 s; side by side, the
	// first request and then the other 19 at once: about 600 ms.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("20 requests of %v took %v over HTTP/1.1, want them side by side", delay, took)
	}
	if n := conns.Load(); n < 2 || n > 20 {
		t.Errorf("%d connections, want 2 to 20", n)
	}
}
