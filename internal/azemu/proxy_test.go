package azemu_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/azemu"
)

// connect sends one proxy request line on a fresh connection and returns
// the status code and the connection (open only after a 200).
func connect(t *testing.T, proxy, line string) (int, net.Conn) {
	t.Helper()
	u, err := url.Parse(proxy)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return resp.StatusCode, nil
	}
	t.Cleanup(func() { c.Close() })
	return resp.StatusCode, c
}

func TestProxyConnect(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name string
		line string
		want int
	}{
		{"other host", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 403},
		{"login on port 80", "CONNECT login.microsoftonline.com:80 HTTP/1.1\r\nHost: login.microsoftonline.com:80\r\n\r\n", 403},
		{"vault suffix lookalike", "CONNECT homelab-kv.vault.azure.net.evil.test:443 HTTP/1.1\r\nHost: homelab-kv.vault.azure.net.evil.test:443\r\n\r\n", 403},
		{"nested vault label", "CONNECT a.homelab-kv.vault.azure.net:443 HTTP/1.1\r\nHost: a.homelab-kv.vault.azure.net:443\r\n\r\n", 403},
		{"unknown vault", "CONNECT nosuch-kv.vault.azure.net:443 HTTP/1.1\r\nHost: nosuch-kv.vault.azure.net:443\r\n\r\n", 502},
		{"vault in the wrong cloud", "CONNECT homelab-kv.vault.azure.cn:443 HTTP/1.1\r\nHost: homelab-kv.vault.azure.cn:443\r\n\r\n", 502},
		{"plain HTTP proxying", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 403},
		{"login", "CONNECT login.microsoftonline.com:443 HTTP/1.1\r\nHost: login.microsoftonline.com:443\r\n\r\n", 200},
		{"China login", "CONNECT login.chinacloudapi.cn:443 HTTP/1.1\r\nHost: login.chinacloudapi.cn:443\r\n\r\n", 200},
		{"US Gov login", "CONNECT login.microsoftonline.us:443 HTTP/1.1\r\nHost: login.microsoftonline.us:443\r\n\r\n", 200},
		{"vault", "CONNECT homelab-kv.vault.azure.net:443 HTTP/1.1\r\nHost: homelab-kv.vault.azure.net:443\r\n\r\n", 200},
	}
	refused := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, _ := connect(t, f.emu.ProxyURL(), c.line)
			if got != c.want {
				t.Errorf("status = %d, want %d", got, c.want)
			}
		})
		if c.want != 200 {
			refused++
		}
	}
	if diff := cmp.Diff(refused, f.emu.Stats().ProxyRefused); diff != "" {
		t.Errorf("ProxyRefused (-want +got):\n%s", diff)
	}

	// The SDK-level view of a refused host: the transport fails, nothing is dialled.
	hc := &http.Client{Transport: f.emu.ProxyTransport(), Timeout: 5 * time.Second}
	_, err := hc.Get("https://example.com/")
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("GET https://example.com via proxy: %v, want a Forbidden proxy error", err)
	}

	// The certificate must match the CONNECT host: SNI for another host fails.
	_, conn := connect(t, f.emu.ProxyURL(), "CONNECT login.microsoftonline.com:443 HTTP/1.1\r\nHost: login.microsoftonline.com:443\r\n\r\n")
	tc := tls.Client(conn, &tls.Config{ServerName: "homelab-kv.vault.azure.net", RootCAs: f.emu.CertPool()})
	if err := tc.Handshake(); err == nil {
		t.Error("TLS handshake with mismatched SNI succeeded")
	}
	// And the emulator CA verifies the real host name, with h2 negotiated.
	_, conn = connect(t, f.emu.ProxyURL(), "CONNECT homelab-kv.vault.azure.net:443 HTTP/1.1\r\nHost: homelab-kv.vault.azure.net:443\r\n\r\n")
	tc = tls.Client(conn, &tls.Config{ServerName: "homelab-kv.vault.azure.net", RootCAs: f.emu.CertPool(), NextProtos: []string{"h2", "http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Errorf("ALPN = %q, want h2", got)
	}
}

func TestAdminAPI(t *testing.T) {
	f := newFixture(t, func(o *azemu.Options) { o.AdminAddr = "127.0.0.1:0" })
	admin := f.emu.AdminURL()
	if !strings.HasPrefix(admin, "http://127.0.0.1:") {
		t.Fatalf("AdminURL = %q", admin)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	post := func(path, body string) []byte {
		t.Helper()
		resp, err := hc.Post(admin+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	var set struct{ Version string }
	if err := json.Unmarshal(post("/secrets", `{"vault":"homelab-kv","name":"from-admin","value":"v1","contentType":"text/plain"}`), &set); err != nil {
		t.Fatal(err)
	}
	post("/knobs", `{"requestLatency":"20ms","bandwidthBPS":1000000}`)
	post("/faults", `{"class":"kv-get","count":1,"kind":"throttle"}`)

	c := f.client(t, proxyMode)
	resp, err := c.GetSecret(testCtx(t), "from-admin", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"v1", set.Version}, []string{*resp.Value, resp.ID.Version()}); diff != "" {
		t.Errorf("secret set over admin (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(azemu.Knobs{RequestLatency: 20 * time.Millisecond, BandwidthBPS: 1_000_000}, f.emu.Knobs()); diff != "" {
		t.Errorf("knobs (-want +got):\n%s", diff)
	}

	r, err := hc.Get(admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st azemu.Stats
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[int]int64{429: 1, 200: 1}, st.Classes[azemu.ClassKVGet].Status); diff != "" {
		t.Errorf("stats over admin: kv-get statuses (-want +got):\n%s", diff)
	}
	post("/stats/reset", "")
	post("/faults/clear", "")
	if got := f.emu.Stats().Classes; len(got) != 0 {
		t.Errorf("after reset: %v", got)
	}
	post("/federated-credentials", `{"clientID":"`+clientID+`","name":"added","issuer":"https://issuer.example","subject":"system:serviceaccount:apps:added"}`)
	post("/federated-credentials/delete", `{"clientID":"`+clientID+`","name":"added"}`)
	for _, bad := range []struct{ path, body string }{
		{"/knobs", `{"requestLatency":"soon"}`},
		{"/federated-credentials/delete", `{"clientID":"` + clientID + `","name":"added"}`}, // gone already
		{"/federated-credentials", `{"clientID":"` + clientID + `","name":"x","issuer":"","subject":""}`},
	} {
		resp2, err := hc.Post(admin+bad.path, "application/json", strings.NewReader(bad.body))
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode != 400 {
			t.Errorf("POST %s %s: %d, want 400", bad.path, bad.body, resp2.StatusCode)
		}
	}
}

func TestCommandMain(t *testing.T) {
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "state.json")
	caDir := filepath.Join(dir, "ca")
	run := func() (azemu.State, []byte) {
		t.Helper()
		_ = os.Remove(stateFile)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		done := make(chan int, 1)
		go func() {
			done <- azemu.Main(ctx, []string{"--config", "testdata/demo.yaml", "--ca-dir", caDir, "--state-file", stateFile, "--bandwidth", "200k"}, &stdout, &stderr)
		}()
		var st azemu.State
		for {
			b, err := os.ReadFile(stateFile)
			if err == nil && json.Unmarshal(b, &st) == nil {
				break
			}
			select {
			case code := <-done:
				t.Fatalf("Main exited early with %d: %s", code, stderr.String())
			case <-ctx.Done():
				t.Fatal("no state file")
			case <-time.After(20 * time.Millisecond):
			}
		}
		resp, err := http.Get(st.AdminURL + "/stats")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("admin /stats: %d", resp.StatusCode)
		}
		ca, err := os.ReadFile(st.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("Main = %d, want 0; stderr: %s", code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "proxy: "+st.ProxyURL) {
			t.Errorf("stdout lacks the proxy URL: %s", stdout.String())
		}
		return st, ca
	}
	st1, ca1 := run()
	if !strings.HasPrefix(st1.ProxyURL, "http://127.0.0.1:") || st1.Vaults[vaultName] == "" {
		t.Errorf("state = %+v", st1)
	}
	_, ca2 := run()
	if !bytes.Equal(ca1, ca2) {
		t.Error("restart with the same --ca-dir changed the CA")
	}

	var stderr bytes.Buffer
	if code := azemu.Main(t.Context(), []string{"--bandwidth", "fast"}, io.Discard, &stderr); code != 2 {
		t.Errorf("bad flags: Main = %d, want 2", code)
	}
}
