package cacheserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

// TestServe runs `kvinject cache` behind a real kube-apiserver: HTTPS with
// TLS 1.2 at least, callers proven by TokenReview (no token and garbage
// refused, a pod's bound token let through to the lookup), and /metrics
// only for authorized bearer tokens.
func TestServe(t *testing.T) {
	cfg := k8stest.Start(t, &envtest.Environment{})
	dir := t.TempDir()
	cert, err := certtest.SelfSigned(certtest.EC, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.Key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"tls.crt": certtest.CertsPEM(cert.Cert),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	o := DefaultServeOptions()
	o.Host, o.Port, o.CertDir = "127.0.0.1", k8stest.FreePort(t), dir
	metricsPort, probePort := k8stest.FreePort(t), k8stest.FreePort(t)
	o.MetricsAddr, o.ProbeAddr = fmt.Sprintf("127.0.0.1:%d", metricsPort), fmt.Sprintf("127.0.0.1:%d", probePort)
	o.Cache.Cloud, _ = spec.LookupCloud(spec.DefaultCloud)
	// Azure is out of reach here: upstream reads fail at once, which is
	// enough to see a proven caller reach the lookup.
	o.Cache.Proxy = func(*http.Request) (*url.URL, error) { return url.Parse("http://127.0.0.1:1") }
	o.Cache.Retry = &policy.RetryOptions{MaxRetries: -1}
	o.Cache.MaxStale = -1
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := k8stest.RunServer(t, func(ctx context.Context) error { return Serve(ctx, o, cfg) })
	k8stest.WaitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort))

	roots := x509.NewCertPool()
	roots.AddCert(cert.Cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	endpoint := fmt.Sprintf("https://127.0.0.1:%d%s", o.Port, cacheapi.Path)
	body, _ := json.Marshal(cacheapi.Request{ClientID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", TenantID: "11111111-2222-3333-4444-555555555555",
		Secrets: []cacheapi.SecretRef{{Vault: "https://homelab-kv.vault.azure.net", Name: "app-pgsql"}}})
	ask := func(token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}
	if code, _ := ask(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := ask("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("garbage token: %d, want 401", code)
	}

	// A pod's own token reaches the lookup, which cannot reach Azure.
	cs := kubernetes.NewForConfigOrDie(cfg)
	tctx, cancelTest := context.WithTimeout(ctx, time.Minute)
	defer cancelTest()
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(tctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods("default").Create(tctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1"},
		Spec: corev1.PodSpec{ServiceAccountName: "web", AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(tctx, "web", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{spec.TokenAudience}, ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	code, b := ask(tr.Status.Token)
	var resp cacheapi.Response
	if code != http.StatusOK || json.Unmarshal(b, &resp) != nil || len(resp.Secrets) != 1 || resp.Secrets[0].Error == nil || resp.Secrets[0].Value != "" {
		t.Errorf("a pod's token: %d %s, want 200 with the upstream failure", code, b)
	}

	// /metrics wants an authorized bearer token.
	mresp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	mresp.Body.Close()
	if mresp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %d, want 401", mresp.StatusCode)
	}

	// TLS 1.1 is refused.
	old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}}}
	if r, err := old.Post(endpoint, "application/json", bytes.NewReader(body)); err == nil {
		r.Body.Close()
		t.Error("a TLS 1.1 client was answered")
	}
}
