package selfcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCacheCertificateServesFullyQualifiedName: agents ask the cache as
// https://kvinject-cache.kvinject-system.svc.DOMAIN. (a trailing dot, so
// that no DNS search domain is tried first). Go's TLS client verifies
// that name, trailing dot and all, against the self-signed certificate,
// for the default and a configured cluster domain; a certificate of
// another domain is refused.
func TestCacheCertificateServesFullyQualifiedName(t *testing.T) {
	for _, tt := range []struct {
		certDomain, askDomain string
		wantOK                bool
	}{
		{"", "cluster.local", true},
		{"corp.example", "corp.example", true},
		{"cluster.local", "corp.example", false},
	} {
		t.Run(tt.certDomain+" asked as "+tt.askDomain, func(t *testing.T) {
			o := cacheOptions(t)
			o.ClusterDomain = tt.certDomain
			o.Complete()
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			st, _, _ := plan(nil, o, now)
			cs, _, err := planCache(nil, st, o, now)
			if err != nil {
				t.Fatal(err)
			}
			data := cs.data()
			pair, err := tls.X509KeyPair(data[KeyTLSCert], data[KeyTLSKey])
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			ts.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
			ts.StartTLS()
			defer ts.Close()
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(data[FileCABundle]) {
				t.Fatal("no CA in ca.crt")
			}
			addr := ts.Listener.Addr().String()
			var sni string
			client := &http.Client{Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: roots, VerifyConnection: func(cs tls.ConnectionState) error {
					sni = cs.ServerName
					return nil
				}},
				// No cluster DNS here: the name goes to the test server.
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}}
			_, port, _ := net.SplitHostPort(addr)
			host := "kvinject-cache." + o.Namespace + ".svc." + tt.askDomain + "."
			resp, err := client.Get("https://" + net.JoinHostPort(host, port) + "/")
			if tt.wantOK {
				if err != nil {
					t.Fatalf("GET %s: %v", host, err)
				}
				_ = resp.Body.Close()
				if want := host[:len(host)-1]; sni != want {
					t.Errorf("SNI %q, want %q (the trailing dot dropped)", sni, want)
				}
				return
			}
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("GET %s: a certificate for another cluster domain was accepted", host)
			}
		})
	}
}
