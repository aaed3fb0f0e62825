//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/testkit/helmtool"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

const (
	// pauseImage is the sandbox image the local cluster imports (test/cluster/up.sh).
	pauseImage    = "kvinject.local/pause:1.0"
	helmRelease   = "kvinject"
	helmNamespace = "kvinject-helm"
	helmAppNS     = "e2e-helm"
)

// helmLeftovers are what `helm uninstall` leaves of a self-signed release,
// as docs/install.md names them: the webhook's run-time certificate Secret.
var helmLeftovers = []string{"secret/" + harness.WebhookCertSecret}

// TestHelmChart installs kvinject with the chart and the real Helm, as a
// user does: `helm install` (self-signed certificates), an opted-in pod
// injected and Running, `helm test`, `helm upgrade` of a value that rolls
// the webhook while pods are admitted (none refused, none left
// uninjected), and `helm uninstall` leaving nothing but what the docs
// name. It replaces the suite's kustomize installation, so it runs after
// every test that needs that one.
func TestHelmChart(t *testing.T) {
	ctx := context.Background()
	// The chart installs the same cluster-scoped objects as the suite's
	// kustomize installation (TestMain's harness.Up).
	removeInstall(t, cluster.OverlayDir(harness.SelfSignedInstall))

	repo, tag := splitImage(image)
	values := []string{
		"--set", "image.repository=" + repo, "--set", "image.tag=" + tag,
		"--set", "config.tenantID=" + harness.TenantID,
		"--set", "egress.httpsProxy=" + emu.ProxyURL,
		"--set", "egress.caBundle.configMap=" + harness.EgressCAConfig,
		"--set", "egress.caBundle.key=" + harness.EgressCAKey,
		"--set", "tests.namespace=" + helmAppNS,
	}
	namespace(t, helmAppNS, nil)
	// What other tests left (the credential provider's RBAC) is not the release's.
	before := clusterScopedKvinject(t)
	start := time.Now()
	install := append([]string{"install", helmRelease, helmtool.ChartDir, "-n", helmNamespace, "--create-namespace",
		"--wait", "--timeout", "4m"}, values...)
	if _, err := helmRun(ctx, install...); err != nil {
		diagnoseRelease()
		t.Fatal(err)
	}
	t.Logf("helm install --wait: %s", time.Since(start).Round(time.Second))
	t.Cleanup(func() {
		helmRun(context.Background(), "uninstall", helmRelease, "-n", helmNamespace, "--ignore-not-found", "--wait")
	})

	// The webhook writes its CA into the configuration once it has a
	// certificate: until then a dry run may be refused.
	waitFor(t, 2*time.Minute, "the chart's webhook to inject a dry-run pod", func() (bool, error) {
		p, err := dryRunPod(ctx, helmAppNS)
		if err != nil {
			return false, err
		}
		return agentCount(*p) == 1, fmt.Errorf("not injected")
	}, diagnoseRelease)

	// The app is the node's pause image: after the tests that pull the app
	// image from the mirror with a credential, the kubelet no longer runs
	// its imported copy for a pod without one (TestOnChange says more).
	// Running means the agent wrote the secrets.
	d := dbreader(helmAppNS, "dbreaderapp", 1)
	d.Spec.Template.Spec.Containers[0].Image = pauseImage
	d.Spec.Template.Spec.Containers[0].SecurityContext.RunAsUser = ptr.To(int64(65532))
	create(t, d)
	for _, p := range waitRunning(t, helmAppNS, "dbreaderapp", 1) {
		if n := agentCount(p); n != 1 {
			t.Errorf("pod %s has %d agents, want 1", p.Name, n)
		}
	}

	out, err := helmRun(ctx, "test", helmRelease, "-n", helmNamespace, "--timeout", "2m", "--logs")
	if err != nil {
		t.Errorf("helm test: %v\n%s", err, out)
	}

	helmUpgradeWhileAdmitting(t, values)

	if out, err := helmRun(ctx, "uninstall", helmRelease, "-n", helmNamespace, "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	checkUninstalled(t, before)
}

// helmUpgradeWhileAdmitting runs `helm upgrade` with one value changed
// (the webhook logs its admissions: new arguments, a new rollout) while
// dry-run pods are created without pause, and fails on any refusal or
// any pod admitted without the agent.
func helmUpgradeWhileAdmitting(t *testing.T, values []string) {
	t.Helper()
	ctx := context.Background()
	before := webhookPods(t)
	load := startAdmissionLoad(helmAppNS, 50*time.Millisecond)
	start := time.Now()
	upgrade := append([]string{"upgrade", helmRelease, helmtool.ChartDir, "-n", helmNamespace,
		"--wait", "--timeout", "4m"}, values...)
	out, err := helmRun(ctx, append(upgrade, "--set", "config.logAdmissions=true")...)
	// Keep admitting a few seconds past the rollout: the old replicas'
	// endpoints leave last.
	time.Sleep(5 * time.Second)
	counts := load.stop()
	if err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	after := webhookPods(t)
	t.Logf("helm upgrade --wait: %s; webhook pods %v -> %v; %s", time.Since(start).Round(time.Second), before, after, counts)
	for _, p := range after {
		for _, q := range before {
			if p == q {
				t.Errorf("webhook pod %s survived the upgrade: the changed value did not roll the webhook", p)
			}
		}
	}
	counts.check(t, "helm upgrade", 20)
}

// checkUninstalled fails on anything of the release left after
// `helm uninstall` other than helmLeftovers: a cluster-scoped object named
// kvinject that was not there before the install (before), and every
// namespaced object in the release's namespace but the namespace's own
// defaults.
func checkUninstalled(t *testing.T, before map[string]bool) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 2*time.Minute, "the release's pods gone", func() (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(helmNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(list.Items) == 0, fmt.Errorf("%d pods left", len(list.Items))
	})
	var left []string
	for name := range clusterScopedKvinject(t) {
		if !before[name] && name != "namespace/"+helmNamespace {
			left = append(left, name)
		}
	}
	out, err := cluster.KubectlOut(ctx, nil, "get", strings.Join(apiResources(t, "true"), ","), "-o", "name", "--ignore-not-found", "-n", helmNamespace)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Fields(string(out)) {
		if !namespaceDefault(name) {
			left = append(left, name)
		}
	}
	sort.Strings(left)
	want := append([]string(nil), helmLeftovers...)
	sort.Strings(want)
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("after helm uninstall: left %v, want only %v (docs/install.md)", left, want)
	}
	if err := cluster.Client.CoreV1().Namespaces().Delete(ctx, helmNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

// clusterScopedKvinject names every cluster-scoped object whose name has
// kvinject in it (kind/name), the local node's own Node and CSINode
// (kvinject-node) aside.
func clusterScopedKvinject(t *testing.T) map[string]bool {
	t.Helper()
	ctx := context.Background()
	nodes, err := cluster.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := map[string]bool{}
	for _, n := range nodes.Items {
		node[n.Name] = true
	}
	out, err := cluster.KubectlOut(ctx, nil, "get", strings.Join(apiResources(t, "false"), ","), "-o", "name", "--ignore-not-found")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, name := range strings.Fields(string(out)) {
		if _, obj, _ := strings.Cut(name, "/"); strings.Contains(obj, "kvinject") && !node[obj] {
			names[name] = true
		}
	}
	return names
}

// namespaceDefault: what every namespace has, kvinject installed or not.
func namespaceDefault(name string) bool {
	switch name {
	case "configmap/kube-root-ca.crt", "serviceaccount/default":
		return true
	}
	return strings.HasPrefix(name, "event.events.k8s.io/") || strings.HasPrefix(name, "event/")
}

// apiResources lists the listable resource types, namespaced or not.
func apiResources(t *testing.T, namespaced string) []string {
	t.Helper()
	out, err := cluster.KubectlOut(context.Background(), nil, "api-resources", "--verbs=list", "--namespaced="+namespaced, "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, k := range strings.Fields(string(out)) {
		// Events outlive their objects by design; they are not the release's.
		if k == "events" || k == "events.events.k8s.io" {
			continue
		}
		kinds = append(kinds, k)
	}
	return kinds
}

// webhookPods names the release's running webhook pods.
func webhookPods(t *testing.T) []string {
	t.Helper()
	list, err := cluster.Client.CoreV1().Pods(helmNamespace).List(context.Background(),
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=webhook"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatal("the release runs no webhook pod")
	}
	return names
}

// diagnoseRelease logs the release's pods, their last log lines and the
// namespace's events.
func diagnoseRelease() {
	ctx := context.Background()
	for _, args := range [][]string{
		{"-n", helmNamespace, "get", "pods,deployments,secrets", "-o", "wide"},
		{"-n", helmNamespace, "logs", "-l", "app.kubernetes.io/component=webhook", "--tail=40", "--prefix"},
		{"-n", helmNamespace, "get", "events", "--sort-by=.lastTimestamp"},
	} {
		out, err := cluster.KubectlOut(ctx, nil, args...)
		fmt.Printf("kubectl %s:\n%s%v\n", strings.Join(args, " "), out, err)
	}
}

// helmRun runs the pinned Helm against the local cluster from the
// repository's root.
func helmRun(ctx context.Context, args ...string) ([]byte, error) {
	return helmtool.Run(ctx, cluster.Root, cluster.Root, []string{"KUBECONFIG=" + cluster.Kubeconfig}, args...)
}

// splitImage splits a reference into repository and tag.
func splitImage(ref string) (repo, tag string) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, ""
	}
	return ref[:i], ref[i+1:]
}
