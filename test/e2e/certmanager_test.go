//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/helmtool"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// The cert-manager installs: cert-manager's own controllers (the release
// pinned in test/cluster/certmanager/go.mod, run as a process on this machine)
// issue the webhook's and the cache's certificates and inject the CA into
// the webhook configuration.
const (
	certManagerNS      = "e2e-certmanager"
	certManagerInstall = "manifests/with-cache/cert-manager"
	webhookCertificate = harness.WebhookCertSecret // the Certificate and its Secret
	cacheCertificate   = "kvinject-cache-cert"
	webhookServerName  = harness.WebhookDeploy + "." + harness.KvinjectNS + ".svc"
	cacheServerName    = harness.CacheService + "." + harness.KvinjectNS + ".svc"
	servingPort        = "9443" // the webhook's and the cache's
	mutatingWebhook    = "kvinject"
)

var certificateGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}

// certManagerInstalls replaces the suite's installation with the
// cert-manager ones, kustomize then Helm, and puts it back at the end.
func certManagerInstalls(t *testing.T) {
	ctx := context.Background()
	namespace(t, certManagerNS, nil)
	startCertManager(t)
	removeInstall(t, cluster.OverlayDir(harness.SelfSignedInstall))
	t.Cleanup(func() {
		if err := cluster.Deploy(context.Background(), image, emu); err != nil {
			t.Errorf("restore the suite's installation: %v", err)
		}
	})

	t.Run("kustomize", func(t *testing.T) {
		dir := cluster.OverlayDir(certManagerInstall)
		t.Cleanup(func() { removeInstall(t, dir) })
		start := time.Now()
		if err := cluster.DeployFrom(ctx, certManagerInstall, image, emu); err != nil {
			t.Fatal(err)
		}
		proveInstall(t, "cm-kustomize", start)
	})

	t.Run("helm", func(t *testing.T) {
		t.Cleanup(func() { helmUninstall(t) })
		start := time.Now()
		helmInstall(t, "with-cache-cert-manager-values.yaml")
		proveInstall(t, "cm-helm", start)
	})
}

// proveInstall shows what a cert-manager installation must do: both
// certificates issued, the CA injected, the issued certificates served, an
// opted-in pod injected (and one reading through the cache) running, and a
// renewal rolling through without a refused admission.
func proveInstall(t *testing.T, app string, start time.Time) {
	ctx := context.Background()
	for _, name := range []string{webhookCertificate, cacheCertificate} {
		waitCertificateReady(t, name)
	}
	t.Logf("certificates issued and kvinject rolled out %s after the install", time.Since(start).Round(100*time.Millisecond))
	waitFor(t, time.Minute, "the CA injected into the webhook configuration", func() (bool, error) {
		mwc, err := cluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mutatingWebhook, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ca := secretData(t, webhookCertificate)["ca.crt"]
		for _, w := range mwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, ca) {
				return false, fmt.Errorf("webhook %s: caBundle is not the Certificate's CA", w.Name)
			}
		}
		return len(ca) > 0, nil
	})
	webhookCert := secretData(t, webhookCertificate)["tls.crt"]
	cacheCert := secretData(t, cacheCertificate)["tls.crt"]
	waitServed(t, "webhook", webhookServerName, webhookCert)
	waitServed(t, "cache", cacheServerName, cacheCert)

	// The apps run the node's pause image, as TestHelmChart's does: after
	// the tests that pull the app image from the mirror with a credential,
	// the kubelet no longer runs its imported copy for a pod without one.
	// Running means the agent wrote the secrets (through the cache for the
	// second, which requires it).
	for _, d := range []*appsv1.Deployment{dbreader(certManagerNS, app, 1), cached(certManagerNS, app+"-cache", 1, spec.CacheRequired, cacheIP(t))} {
		d.Spec.Template.Spec.Containers[0].Image = pauseImage
		d.Spec.Template.Spec.Containers[0].SecurityContext.RunAsUser = ptr.To(int64(65532))
		create(t, d)
	}
	for _, a := range []string{app, app + "-cache"} {
		for _, p := range waitRunning(t, certManagerNS, a, 1) {
			if p.Annotations[spec.AnnotationStatus] != spec.StatusInjected || agentCount(p) != 1 {
				t.Errorf("pod %s: %s=%q, %d agents; want injected", p.Name, spec.AnnotationStatus, p.Annotations[spec.AnnotationStatus], agentCount(p))
			}
		}
	}
	for _, a := range []string{app, app + "-cache"} {
		if err := cluster.Client.AppsV1().Deployments(certManagerNS).Delete(ctx, a, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}
	renewUnderLoad(t, webhookCert, cacheCert)
}

// renewUnderLoad renews both certificates the way `cmctl renew` does while
// opted-in pods are created (dry-run) four times a second, and waits for
// the new certificates to be served: no admission may be refused.
func renewUnderLoad(t *testing.T, oldWebhook, oldCache []byte) {
	load := startAdmissionLoad(certManagerNS, 250*time.Millisecond)
	start := time.Now()
	for _, name := range []string{webhookCertificate, cacheCertificate} {
		renewCertificate(t, name)
	}
	var newWebhook, newCache []byte
	waitFor(t, 2*time.Minute, "the renewed certificates in their Secrets", func() (bool, error) {
		newWebhook, newCache = secretData(t, webhookCertificate)["tls.crt"], secretData(t, cacheCertificate)["tls.crt"]
		return !bytes.Equal(newWebhook, oldWebhook) && !bytes.Equal(newCache, oldCache), nil
	})
	issued := time.Since(start)
	waitServed(t, "webhook", webhookServerName, newWebhook)
	waitServed(t, "cache", cacheServerName, newCache)
	served := time.Since(start)
	time.Sleep(3 * time.Second) // admissions right after the switch too
	counts := load.stop()
	t.Logf("renewal: new certificates issued in %s, served by every replica after %s; %s",
		issued.Round(100*time.Millisecond), served.Round(100*time.Millisecond), counts)
	counts.check(t, "the renewal", 10)
}

// renewCertificate is `cmctl renew`: it sets the Certificate's Issuing
// condition to True (reason ManuallyTriggered) and cert-manager issues it
// again.
func renewCertificate(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	certs := dynamic.NewForConfigOrDie(cluster.Config).Resource(certificateGVR).Namespace(harness.KvinjectNS)
	u, err := certs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	kept := conds[:0]
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Issuing" {
			continue
		}
		kept = append(kept, c)
	}
	kept = append(kept, map[string]any{
		"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
		"message":            "Certificate re-issuance manually triggered",
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		"observedGeneration": u.GetGeneration(),
	})
	if err := unstructured.SetNestedSlice(u.Object, kept, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("renew Certificate %s: %v", name, err)
	}
}

// waitCertificateReady waits for the Certificate's Ready condition.
func waitCertificateReady(t *testing.T, name string) {
	t.Helper()
	certs := dynamic.NewForConfigOrDie(cluster.Config).Resource(certificateGVR).Namespace(harness.KvinjectNS)
	waitFor(t, 2*time.Minute, "Certificate "+name+" Ready", func() (bool, error) {
		checkCertManagerRuns(t)
		u, err := certs.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
				return m["status"] == "True", fmt.Errorf("Ready %v: %v", m["status"], m["message"])
			}
		}
		return false, errors.New("no Ready condition")
	})
}

func secretData(t *testing.T, name string) map[string][]byte {
	t.Helper()
	s, err := cluster.Client.CoreV1().Secrets(harness.KvinjectNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read Secret %s: %v", name, err)
	}
	return s.Data
}

// waitServed waits until every ready replica of component serves the leaf
// certificate certPEM (tls.crt of its Secret), verified for serverName with
// the CA of the webhook's Secret (ca.crt), the one the agents trust.
func waitServed(t *testing.T, component, serverName string, certPEM []byte) {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("no certificate in the %s's Secret", component)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secretData(t, webhookCertificate)["ca.crt"]) {
		t.Fatal("no CA in the webhook's certificate Secret")
	}
	waitFor(t, 3*time.Minute, "the "+component+"'s replicas serving its Secret's certificate", func() (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(harness.KvinjectNS).List(context.Background(),
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kvinject,app.kubernetes.io/component=" + component})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil || !ready(p) || p.Status.PodIP == "" {
				continue
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(p.Status.PodIP, servingPort),
				&tls.Config{RootCAs: roots, ServerName: serverName})
			if err != nil {
				return false, fmt.Errorf("%s: %w", p.Name, err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if !bytes.Equal(leaf.Raw, block.Bytes) {
				return false, fmt.Errorf("%s serves serial %s, not its Secret's", p.Name, leaf.SerialNumber)
			}
			n++
		}
		return n > 0, errors.New("no ready replica")
	})
}

// startCertManager builds test/cluster/certmanager (cert-manager's controllers at
// the pinned release), applies that release's CRDs and runs it against the
// cluster until the test ends, then removes the CRDs (and with them every
// cert-manager object). Its log is in the test's output when it fails.
func startCertManager(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	toolDir := filepath.Join(cluster.Root, "test", "cluster", "certmanager")
	bin := filepath.Join(cluster.Root, "bin", "certmanager")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	build.Dir, build.Env = toolDir, append(os.Environ(), "CGO_ENABLED=0") // static, as every binary of the suite
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the cert-manager controller: %v\n%s", err, out)
	}
	list := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	list.Dir = toolDir
	dir, err := list.Output()
	if err != nil {
		t.Fatalf("locate cert-manager's source: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(dir)), "deploy", "crds")
	if _, err := cluster.KubectlOut(ctx, nil, "apply", "--server-side", "-f", crds); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.KubectlOut(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(cluster.StateDir, "logs", "certmanager.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--kubeconfig", cluster.Kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			logf.Close()
		})
	}
	certManagerExited = exited
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("cert-manager controller's log (%s), last lines:\n%s", logPath, tail(string(b), 150))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := cluster.KubectlOut(ctx, nil, "delete", "--ignore-not-found", "--wait=true", "-f", crds); err != nil {
			t.Errorf("remove cert-manager's CRDs: %v", err)
		}
	})
	time.Sleep(2 * time.Second) // a flag or kubeconfig it refuses ends it at once
	checkCertManagerRuns(t)
}

// certManagerExited is closed when the cert-manager controller process
// ends: waits for what it does fail at once then.
var certManagerExited chan struct{}

func checkCertManagerRuns(t *testing.T) {
	t.Helper()
	select {
	case <-certManagerExited:
		t.Fatal("the cert-manager controller exited (its log is below)")
	default:
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// removeInstall deletes an installation (its kustomize directory) and
// waits for its namespace to be gone.
func removeInstall(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := cluster.KubectlOut(ctx, nil, "delete", "--ignore-not-found", "--wait=true", "--timeout=3m", "-k", dir); err != nil {
		t.Fatalf("remove %s: %v", dir, err)
	}
	waitNamespaceGone(t, harness.KvinjectNS)
}

func waitNamespaceGone(t *testing.T, ns string) {
	t.Helper()
	waitFor(t, 3*time.Minute, "namespace "+ns+" deleted", func() (bool, error) {
		_, err := cluster.Client.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}

// helmInstall installs the chart as release kvinject with a values file of
// charts/kvinject/ci and what the local cluster needs (the images built
// here, the reference tenant, egress through the emulator), the settings
// harness.Deploy gives the kustomize installs.
func helmInstall(t *testing.T, values string) {
	t.Helper()
	ctx := context.Background()
	// The egress CA ConfigMap the cache mounts must be there first.
	if err := cluster.AppNamespace(ctx, harness.KvinjectNS, nil, emu); err != nil {
		t.Fatal(err)
	}
	repo, tag := splitImage(image)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_, err := helmRun(ctx, "install", "kvinject", helmtool.ChartDir, "--namespace", harness.KvinjectNS,
		"--values", filepath.Join(helmtool.ChartDir, "ci", values),
		"--set", "image.repository="+repo, "--set", "image.tag="+tag,
		"--set", "config.tenantID="+harness.TenantID,
		"--set", "egress.httpsProxy="+emu.ProxyURL,
		"--set", "egress.caBundle.configMap="+harness.EgressCAConfig, "--set", "egress.caBundle.key="+harness.EgressCAKey,
		"--set-json", `cache.extraArgs=["--ttl=`+harness.CacheTTL.String()+`"]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{harness.WebhookDeploy, harness.CacheDeploy} {
		if _, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "rollout", "status", "deployment/"+d, "--timeout=180s"); err != nil {
			t.Fatal(err)
		}
	}
}

// helmUninstall removes the release and its namespace (with the Secrets
// cert-manager wrote there).
func helmUninstall(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := helmRun(ctx, "uninstall", "kvinject", "--namespace", harness.KvinjectNS, "--ignore-not-found", "--wait"); err != nil {
		t.Error(err)
	}
	if err := cluster.Client.CoreV1().Namespaces().Delete(ctx, harness.KvinjectNS, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	waitNamespaceGone(t, harness.KvinjectNS)
}
