package initagent

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
)

func TestDialerWarmConnectionIsReused(t *testing.T) {
	emu, err := azemu.Start(azemu.Options{Config: azemu.Config{
		Tenants: []azemu.Tenant{{ID: testTenant}},
		Vaults:  []azemu.Vault{{Name: "homelab-kv", Tenant: testTenant}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	proxy, _ := url.Parse(emu.ProxyURL())
	d := newDialer(emu.CertPool())
	d.proxy = http.ProxyURL(proxy)
	defer d.Close()
	tr := newTransport(d)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

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
	_, err = d.DialTLSContext(ctx, "tcp", "example.com:443")
	if err == nil || !strings.Contains(err.Error(), "refused CONNECT example.com:443") {
		t.Errorf("dial through a refusing proxy: %v", err)
	}
}
