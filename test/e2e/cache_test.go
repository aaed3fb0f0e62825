//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// cacheHost is the cache Service's fully qualified name, as the webhook's --cache-url has it
// (there with a trailing dot, which the resolver drops for /etc/hosts).
const cacheHost = "kvinject-cache.kvinject-system.svc.cluster.local"

// upstreamCounts reads the emulator's token exchanges and secret reads.
func upstreamCounts(t *testing.T) (tokens, reads int) {
	t.Helper()
	var stats struct {
		Classes map[string]struct {
			Requests int `json:"requests"`
		} `json:"classes"`
	}
	if err := emu.Admin(context.Background(), "GET", "/stats", nil, &stats); err != nil {
		t.Fatal(err)
	}
	return stats.Classes["token"].Requests, stats.Classes["kv-get"].Requests
}

// cacheIP is the cache Service's ClusterIP. The local cluster runs no
// cluster DNS: pods map the Service's name to it with hostAliases, as
// cluster DNS would.
func cacheIP(t *testing.T) string {
	t.Helper()
	svc, err := cluster.Client.CoreV1().Services(harness.KvinjectNS).Get(context.Background(), harness.CacheService, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

func cached(ns, name string, replicas int32, mode, ip string) *appsv1.Deployment {
	d := dbreader(ns, name, replicas)
	d.Spec.Template.Annotations[spec.AnnotationCache] = mode
	d.Spec.Template.Spec.HostAliases = []corev1.HostAlias{{IP: ip, Hostnames: []string{cacheHost}}}
	return d
}

func scaleApp(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	if _, err := cluster.KubectlOut(context.Background(), nil, "-n", ns, "scale", "deployment/"+name, fmt.Sprintf("--replicas=%d", replicas)); err != nil {
		t.Fatal(err)
	}
}

func agentLogs(t *testing.T, ns string, ps []corev1.Pod) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range ps {
		out[p.Name] = logs(t, ns, p.Name, spec.AgentContainerName, false)
	}
	return out
}

// TestClusterCache: the pods of a Deployment asking the cache cost the link
// one sign-in and one read per cache replica, not one per pod; with the
// emulator failing, new pods start from the cache (stale values, said so)
// while a pod whose secret is not cached fails with the diagnosis; a
// federated credential removed stops every new pod once the TTL has passed.
func TestClusterCache(t *testing.T) {
	const ns = "e2e-cache"
	ctx := context.Background()
	namespace(t, ns, nil)
	ip := cacheIP(t)

	tokens0, reads0 := upstreamCounts(t)
	create(t, cached(ns, "cached", 4, spec.CacheOn, ip))
	running := waitRunning(t, ns, "cached", 4)
	tokens1, reads1 := upstreamCounts(t)
	t.Logf("4 pods through the cache: %d token exchanges, %d reads (direct: 4 and 4)", tokens1-tokens0, reads1-reads0)
	if tokens1-tokens0 > harness.CacheReplicas || reads1-reads0 > harness.CacheReplicas {
		t.Errorf("4 pods cost %d token exchanges and %d reads, want at most %d of each (one per cache replica)",
			tokens1-tokens0, reads1-reads0, harness.CacheReplicas)
	}
	for pod, log := range agentLogs(t, ns, running) {
		if !strings.Contains(log, `"fromCache":1`) || strings.Contains(log, `"signed in"`) {
			t.Errorf("pod %s did not read through the cache:\n%s", pod, log)
		}
	}
	// Each replica holds what it read itself, and the Service may have sent
	// all 4 pods to one (1 in 8). The outage below is about serving stale
	// values, so every replica reads the secret now.
	readOnEveryReplica(t, ns, running[0])
	seeded := time.Now()

	// Past the TTL, with every request to the emulator failing: new pods of
	// the Deployment start with the last values.
	time.Sleep(time.Until(seeded.Add(harness.CacheTTL + 2*time.Second)))
	if err := emu.Admin(ctx, "POST", "/knobs", map[string]any{"faultRate": 1, "rateFaults": []any{map[string]any{"kind": "unavailable"}}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Admin(ctx, "POST", "/knobs", map[string]any{}, nil) })
	before := map[string]bool{}
	for _, p := range running {
		before[p.Name] = true
	}
	scaleApp(t, ns, "cached", 6)
	stale := 0
	for _, p := range waitRunning(t, ns, "cached", 6) {
		if before[p.Name] {
			continue
		}
		log := logs(t, ns, p.Name, spec.AgentContainerName, false)
		if !strings.Contains(log, "the cache served a stale value") {
			t.Errorf("new pod %s during the outage: no stale value in its agent's log:\n%s", p.Name, log)
		}
		stale++
	}
	if stale != 2 {
		t.Errorf("%d new pods during the outage, want 2", stale)
	}
	// A secret no pod read before: nothing to serve.
	uncached := cached(ns, "uncached", 1, spec.CacheRequired, ip)
	uncached.Spec.Template.Annotations[spec.AnnotationSecretPrefix+"password"] = harness.MirrorCredentialSecret
	create(t, uncached)
	_, msg := failedAgent(t, ns, "uncached")
	// The cause is the cache's last try (503s, retried until its time limit).
	for _, want := range []string{"secret " + harness.MirrorCredentialSecret + ":", "(the kvinject cache's answer)", "Fix: "} {
		if !strings.Contains(msg, want) {
			t.Errorf("the uncached pod's termination message lacks %q:\n%s", want, msg)
		}
	}
	if err := emu.Admin(ctx, "POST", "/knobs", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}

	// Revocation: the federated credential removed; past the TTL no new pod
	// of the ServiceAccount gets a value, although the values are cached.
	fc := map[string]any{"clientID": harness.ClientID, "name": "kvinject-" + ns + "-dbreader"}
	if err := emu.Admin(ctx, "POST", "/federated-credentials/delete", fc, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = emu.Admin(ctx, "POST", "/federated-credentials", map[string]any{"clientID": harness.ClientID, "name": fc["name"],
			"issuer": cluster.IssuerURL, "subject": "system:serviceaccount:" + ns + ":dbreader", "audiences": []string{spec.TokenAudience}}, nil)
	})
	time.Sleep(harness.CacheTTL + 2*time.Second)
	create(t, cached(ns, "revoked", 1, spec.CacheOn, ip))
	_, msg = failedAgent(t, ns, "revoked")
	for _, want := range []string{"AADSTS700213", "(the kvinject cache's answer)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("after the revocation: the termination message lacks %q:\n%s", want, msg)
		}
	}
}

// readOnEveryReplica asks each cache replica, by its pod's address, for
// the Deployment's secret with a token bound to pod, so that each holds
// the value.
func readOnEveryReplica(t *testing.T, ns string, pod corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	tr, err := cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{spec.TokenAudience}, ExpirationSeconds: ptr.To(int64(600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := servingCacheReplicas(t)
	body, _ := json.Marshal(cacheapi.Request{ClientID: harness.ClientID, TenantID: harness.TenantID,
		Secrets: []cacheapi.SecretRef{{Vault: "https://" + harness.Vault + ".vault.azure.net", Name: harness.DBSecret}}})
	for _, r := range replicas {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cacheHost+":9443"+cacheapi.Path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
		resp, err := cacheClient(t, r.Status.PodIP).Do(req)
		if err != nil {
			t.Fatalf("cache replica %s: %v", r.Name, err)
		}
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), `"version"`) {
			t.Fatalf("cache replica %s: %d %.300s", r.Name, resp.StatusCode, out)
		}
	}
}

// servingCacheReplicas waits for the cache's replicas that the Service
// sends requests to: running, ready and not being deleted (a rollout's old
// pods are still listed, at addresses nothing answers), as many as the
// Deployment has.
func servingCacheReplicas(t *testing.T) []corev1.Pod {
	t.Helper()
	var serving []corev1.Pod
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d ready cache replicas", harness.CacheReplicas), func() (bool, error) {
		pods, err := cluster.Client.CoreV1().Pods(harness.KvinjectNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=cache"})
		if err != nil {
			return false, err
		}
		serving = serving[:0]
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) && p.Status.PodIP != "" {
				serving = append(serving, p)
			}
		}
		return len(serving) == harness.CacheReplicas, nil
	})
	return serving
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestClusterCacheRefusals: callers the cache refuses, each with its exact
// reason in the cache's log, and a ServiceAccount without a federated
// credential asking for a secret another one has cached gets no value.
func TestClusterCacheRefusals(t *testing.T) {
	const ns = "e2e-cache-refusals"
	ctx := context.Background()
	namespace(t, ns, nil)
	ip := cacheIP(t)
	c := cluster.Client.CoreV1()
	if _, err := c.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The secret is cached for dbreader; a pod of each ServiceAccount runs.
	create(t, cached(ns, "cached", 1, spec.CacheRequired, ip))
	reader := waitRunning(t, ns, "cached", 1)[0]
	plain := dbreader(ns, "other", 1)
	delete(plain.Spec.Template.Labels, spec.LabelInject)
	plain.Spec.Template.Annotations = nil
	plain.Spec.Template.Spec.ServiceAccountName = "other"
	plain.Spec.Template.Spec.Containers[0].Args = []string{"--files", ""}
	create(t, plain)
	other := waitRunning(t, ns, "other", 1)[0]

	token := func(sa, pod string, audiences ...string) string {
		t.Helper()
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To(int64(600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod}}}
		if pod != "" {
			p, err := c.Pods(ns).Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tr.Spec.BoundObjectRef.UID = p.UID
		} else {
			tr.Spec.BoundObjectRef = nil
		}
		got, err := c.ServiceAccounts(ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got.Status.Token
	}
	client := cacheClient(t, ip)
	body := func(names ...string) []byte {
		req := cacheapi.Request{ClientID: harness.ClientID, TenantID: harness.TenantID}
		for _, n := range names {
			req.Secrets = append(req.Secrets, cacheapi.SecretRef{Vault: "https://" + harness.Vault + ".vault.azure.net", Name: n})
		}
		b, _ := json.Marshal(req)
		return b
	}
	post := func(bearer string, b []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+cacheHost+cacheapi.Path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, out
	}

	// The pod's own token is served: the proof that the refusals below are
	// the tokens', not the path's.
	if code, out := post(token("dbreader", reader.Name, spec.TokenAudience), body(harness.DBSecret)); code != http.StatusOK || !strings.Contains(string(out), `"version"`) {
		t.Fatalf("the reader's own token: %d %.200s", code, out)
	}

	gone := dbreader(ns, "gone", 1)
	delete(gone.Spec.Template.Labels, spec.LabelInject)
	gone.Spec.Template.Annotations = nil
	gone.Spec.Template.Spec.Containers[0].Args = []string{"--files", ""}
	create(t, gone)
	gonePod := waitRunning(t, ns, "gone", 1)[0]
	goneToken := token("dbreader", gonePod.Name, spec.TokenAudience)
	if err := cluster.Client.AppsV1().Deployments(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the pod "+gonePod.Name+" deleted", func() (bool, error) {
		_, err := c.Pods(ns).Get(ctx, gonePod.Name, metav1.GetOptions{})
		return err != nil, nil
	})
	time.Sleep(11 * time.Second) // the API server caches a successful review for 10 s

	for _, tt := range []struct {
		name, token string
		body        []byte
		status      int
		reason      string
	}{
		{"a token for the API server's audience", token("dbreader", reader.Name), body(harness.DBSecret), http.StatusUnauthorized, "wrong-audience"},
		{"the token of a deleted pod", goneToken, body(harness.DBSecret), http.StatusUnauthorized, "pod-gone"},
		{"a token bound to no pod", token("dbreader", "", spec.TokenAudience), body(harness.DBSecret), http.StatusUnauthorized, "not-pod-bound"},
		{"garbage", "not-a-token", body(harness.DBSecret), http.StatusUnauthorized, "not-a-jwt"},
		{"an oversized request", token("dbreader", reader.Name, spec.TokenAudience), append(body(harness.DBSecret), bytes.Repeat([]byte(" "), cacheapi.MaxRequestBytes)...), http.StatusRequestEntityTooLarge, "too-large"},
	} {
		code, out := post(tt.token, tt.body)
		var ref cacheapi.Refusal
		_ = json.Unmarshal(out, &ref)
		if code != tt.status || ref.Reason != tt.reason {
			t.Errorf("%s: %d %q (%.200s), want %d %q", tt.name, code, ref.Reason, out, tt.status, tt.reason)
		}
	}

	// Another ServiceAccount's live pod token: the cache signs in with it,
	// Entra ID refuses, and the cached value is not served.
	code, out := post(token("other", other.Name, spec.TokenAudience), body(harness.DBSecret))
	var resp cacheapi.Response
	if err := json.Unmarshal(out, &resp); code != http.StatusOK || err != nil || len(resp.Secrets) != 1 {
		t.Fatalf("another ServiceAccount: %d %.300s", code, out)
	}
	if r := resp.Secrets[0]; r.Value != "" || r.Error == nil || r.Error.Code != "AADSTS700213" {
		t.Errorf("another ServiceAccount got %+v, want no value and AADSTS700213", r.Error)
	}
	if strings.Contains(string(out), harness.DBPassword) {
		t.Errorf("another ServiceAccount was served the value")
	}

	// Each refusal is in the cache's log with its reason.
	logs, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "logs", "-l", "app.kubernetes.io/component=cache", "--tail=-1", "--prefix")
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"wrong-audience", "pod-gone", "not-pod-bound", "not-a-jwt", "too-large"} {
		if !strings.Contains(string(logs), `"reason":"`+reason+`"`) {
			t.Errorf("the cache's log has no refusal %q", reason)
		}
	}
	if strings.Contains(string(logs), harness.DBPassword) {
		t.Errorf("the cache's log holds the value")
	}
}

// cacheClient reaches the cache Service from this machine (kube-proxy
// routes the ClusterIP) and trusts the CA the webhook gives pods.
func cacheClient(t *testing.T, ip string) *http.Client {
	t.Helper()
	sec, err := cluster.Client.CoreV1().Secrets(harness.KvinjectNS).Get(context.Background(), harness.WebhookCertSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sec.Data["ca-bundle.crt"]) {
		t.Fatal("no CA in the webhook's certificate Secret")
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: cacheHost},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		},
	}}
}
