package webhookserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/k8stest"
	"github.com/kvinject/kvinject/webhook"
)

// TestServeWithAPIServer runs `kvinject webhook` behind a real kube-apiserver:
// the API server calls it for labelled pods only, Deployment-style pods get
// their namespace from the request, a ServiceAccount created just before its
// pod is found, denials reach the client, and an admitted pod (defaulted by
// the API server) goes through the mutation again unchanged.
func TestServeWithAPIServer(t *testing.T) {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	env := &envtest.Environment{WebhookInstallOptions: envtest.WebhookInstallOptions{
		MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{{
			ObjectMeta: metav1.ObjectMeta{Name: "kvinject"},
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name:                    "pods.kvinject.io",
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Path: ptr.To(MutatePath)}},
				Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
				ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{spec.LabelInject: "true"}},
				FailurePolicy:           &fail,
				SideEffects:             &none,
				ReinvocationPolicy:      &ifNeeded,
				TimeoutSeconds:          ptr.To(int32(5)),
				AdmissionReviewVersions: []string{"v1"},
			}},
		}},
	}}
	cfg := k8stest.Start(t, env)
	wio := env.WebhookInstallOptions

	// The version decides what the mutation may add, as `kvinject webhook` does at start.
	v, err := ServerVersion(cfg)
	if minor, merr := webhook.KubeMinor(v); err != nil || merr != nil || minor < spec.MinSidecarMinor {
		t.Fatalf("ServerVersion = %q, %v (minor %d, %v)", v, err, minor, merr)
	}

	o := DefaultServerOptions()
	o.Mutation.AgentImage = "kvinject:test"
	o.Mutation.TenantID = testTenant
	o.Host, o.Port, o.CertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
	metricsPort, probePort := k8stest.FreePort(t), k8stest.FreePort(t)
	o.MetricsAddr, o.ProbeAddr = fmt.Sprintf("127.0.0.1:%d", metricsPort), fmt.Sprintf("127.0.0.1:%d", probePort)
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := k8stest.RunServer(t, func(ctx context.Context) error { return Serve(ctx, o, cfg) })
	k8stest.WaitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort))

	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancelTest := context.WithTimeout(ctx, time.Minute)
	defer cancelTest()
	mustCreate := func(obj error) {
		t.Helper()
		if obj != nil {
			t.Fatal(obj)
		}
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "group1"}}, metav1.CreateOptions{})
	mustCreate(err)
	// No controller-manager here: the default ServiceAccount is ours to make.
	_, err = cs.CoreV1().ServiceAccounts("group1").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().ServiceAccounts("group1").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: "dbreader", Annotations: map[string]string{spec.SAAnnotationClientID: testClientID},
	}}, metav1.CreateOptions{})
	mustCreate(err)

	pod := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	pod.Namespace = ""
	got, err := cs.CoreV1().Pods("group1").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create labelled pod: %v", err)
	}
	checkInjected(t, got)
	if env := envOf(got.Spec.InitContainers[0], spec.EnvClientID); env != testClientID {
		t.Errorf("AZURE_CLIENT_ID = %q, want the ServiceAccount's %q", env, testClientID)
	}

	// What the API server stored, mutated again, is unchanged: every field
	// it defaults on injected parts was already set.
	sa := webhook.ServiceAccount{Namespace: "group1", Name: "dbreader", Annotations: map[string]string{spec.SAAnnotationClientID: testClientID}}
	if ops, err := webhook.Patch(got.DeepCopy(), sa, &o.Mutation); err != nil || len(ops) != 0 {
		t.Errorf("the stored pod patches again: %v (err %v)", ops, err)
	}

	// A server-side dry run is admitted and stores nothing.
	dry := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	dry.Namespace, dry.Name = "", "dry"
	if p, err := cs.CoreV1().Pods("group1").Create(ctx, dry, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("dry run: %v", err)
	} else {
		checkInjected(t, p)
	}
	if _, err := cs.CoreV1().Pods("group1").Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run pod stored: %v", err)
	}

	// Unlabelled pods never reach the webhook.
	plain := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	plain.Namespace, plain.Name, plain.Labels = "", "plain", nil
	plain.Annotations["kvinject.io/typo"] = "ignored: the webhook never sees this pod"
	if p, err := cs.CoreV1().Pods("group1").Create(ctx, plain, metav1.CreateOptions{}); err != nil {
		t.Errorf("unlabelled pod: %v", err)
	} else if len(p.Spec.InitContainers) != 0 || p.Annotations[spec.AnnotationStatus] != "" {
		t.Errorf("unlabelled pod was mutated")
	}

	// Denials reach the user with the annotation named.
	bad := readPod(t, "../../webhook/testdata/mutate/db-example.in.yaml")
	bad.Namespace, bad.Name = "", "bad"
	bad.Annotations["kvinject.io/secret-username"] = "app-pgsql#"
	_, err = cs.CoreV1().Pods("group1").Create(ctx, bad, metav1.CreateOptions{})
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Code != http.StatusForbidden ||
		!strings.Contains(err.Error(), `kvinject.io/secret-username: property path "" must be 1-256 characters`) {
		t.Errorf("bad pod: %v, want a 403 denial naming kvinject.io/secret-username", err)
	}

	// The counter is exported over HTTPS, to a token allowed to get /metrics
	// only: no token is 401, a token without the role 403.
	metricsURL := fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(wio.LocalServingCAData)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "group1"}}}, metav1.CreateOptions{})
	mustCreate(err)
	token := func(name string) string {
		t.Helper()
		_, err := cs.CoreV1().ServiceAccounts("group1").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		mustCreate(err)
		tr, err := cs.CoreV1().ServiceAccounts("group1").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		mustCreate(err)
		return tr.Status.Token
	}
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token without the role", token("nobody"), http.StatusForbidden},
		{"prometheus", token("prometheus"), http.StatusOK},
	} {
		code, body := getWith(t, hc, metricsURL, tc.token)
		if code != tc.want {
			t.Errorf("metrics for %s: HTTP %d, want %d", tc.name, code, tc.want)
		}
		if code != http.StatusOK {
			continue
		}
		for _, want := range []string{`kvinject_injections_total{result="injected"} 1`, `kvinject_injections_total{result="denied"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	}

	// An admission warning reaches the client: the pod asks for a cache
	// this webhook (no --cache-url) does not have, and reads Azure directly.
	var warnings warningRecorder
	wcfg := rest.CopyConfig(cfg)
	wcfg.WarningHandler = &warnings
	cached := readPod(t, "../../webhook/testdata/mutate/cache-on.in.yaml")
	cached.Namespace, cached.Name, cached.Annotations[spec.AnnotationVault] = "", "cached", "homelab-kv"
	if p, err := kubernetes.NewForConfigOrDie(wcfg).CoreV1().Pods("group1").Create(ctx, cached, metav1.CreateOptions{}); err != nil {
		t.Errorf("pod asking for the cache: %v", err)
	} else {
		checkInjected(t, p)
	}
	want := []string{`kvinject.io/cache: "true", but this cluster runs no kvinject cache (the webhook has no --cache-url): the pod reads from Azure directly`}
	if diff := cmp.Diff(want, warnings.get()); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}

	// Both servers refuse TLS below 1.2 and speak 1.3 to a client that can.
	for name, addr := range map[string]string{
		"webhook": net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(wio.LocalServingPort)),
		"metrics": fmt.Sprintf("127.0.0.1:%d", metricsPort),
	} {
		if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}); err == nil {
			conn.Close()
			t.Errorf("%s accepts TLS 1.1", name)
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("%s negotiated %s, want TLS 1.3", name, tls.VersionName(v))
		}
		conn.Close()
	}
}

// warningRecorder keeps the warnings the API server sends a client.
type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (r *warningRecorder) HandleWarningHeader(code int, agent, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warnings = append(r.warnings, text)
}

func (r *warningRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.warnings)
}

// getWith GETs url with a bearer token, if any.
func getWith(t *testing.T, hc *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// checkInjected asserts what the API server stored of an injected pod.
func checkInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if pod.Annotations[spec.AnnotationStatus] != spec.StatusInjected || len(pod.Spec.InitContainers) == 0 ||
		pod.Spec.InitContainers[0].Name != spec.AgentContainerName {
		t.Fatalf("pod is not injected: annotations %v", pod.Annotations)
	}
}
