//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/test/e2e/harness"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

var (
	cluster         *harness.Cluster
	emu             *harness.Emulator
	image, appImage string
	mirrorImage     string // the app image in the mirror registry, pulled through the credential provider
	testNamespaces  []string
	setupLog        *os.File // what builds write, for tests that build more
)

// Every namespace the tests use, and the ServiceAccounts given a federated
// credential. "e2e-nofed" has none: its pods must fail with AADSTS700213.
var subjects = []harness.Subject{
	{Namespace: "e2e-demo", ServiceAccount: "dbreader"},
	{Namespace: "e2e-scale", ServiceAccount: "dbreader"},
	{Namespace: "e2e-restricted", ServiceAccount: "dbreader"},
	{Namespace: "e2e-root", ServiceAccount: "dbreader"},
	{Namespace: "e2e-refresh", ServiceAccount: "dbreader"},
	{Namespace: "e2e-env", ServiceAccount: "dbreader"},
	{Namespace: "e2e-env-exec", ServiceAccount: "dbreader"},
	{Namespace: "group1", ServiceAccount: "dbreader"},
	{Namespace: "e2e-plain", ServiceAccount: "dbreader"},
	{Namespace: "e2e-missing", ServiceAccount: "dbreader"},
	{Namespace: "e2e-throttled", ServiceAccount: "dbreader"},
	{Namespace: "e2e-denied", ServiceAccount: "dbreader"},
	{Namespace: "e2e-down", ServiceAccount: "dbreader"},
	{Namespace: "e2e-rotation", ServiceAccount: "dbreader"},
	{Namespace: "e2e-tls", ServiceAccount: "dbreader"},
	{Namespace: "e2e-pull", ServiceAccount: "dbreader"},
	{Namespace: "e2e-cache", ServiceAccount: "dbreader"},
	{Namespace: "e2e-cache-refusals", ServiceAccount: "dbreader"},
	{Namespace: "e2e-onchange-restart", ServiceAccount: "dbreader"},
	{Namespace: "e2e-onchange-signal", ServiceAccount: "dbreader"},
	{Namespace: "e2e-helm", ServiceAccount: "dbreader"},
	{Namespace: "e2e-certmanager", ServiceAccount: "dbreader"},
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := k8stest.FindRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	log, err := os.Create(filepath.Join(harness.StateDir(root), "e2e-setup.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer log.Close()
	env, err := harness.Up(ctx, root, "e2e", subjects, log, func(name string, d time.Duration) {
		fmt.Printf("e2e setup: %s (%s)\n", name, d.Round(100*time.Millisecond))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	cluster, emu, image, appImage, mirrorImage = env.Cluster, env.Emulator, env.Image, env.AppImage, env.MirrorImage
	setupLog = log
	return m.Run()
}

// namespace makes a fresh test namespace with the emulator's CA and the
// app's ServiceAccount, deleting what a previous run left.
func namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	c := cluster.Client.CoreV1()
	if err := c.Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err == nil {
		waitFor(t, 2*time.Minute, "namespace "+name+" deleted", func() (bool, error) {
			_, err := c.Namespaces().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	}
	if err := cluster.AppNamespace(ctx, name, labels, emu); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "dbreader", Namespace: name,
		Annotations: map[string]string{spec.SAAnnotationClientID: harness.ClientID}}}
	if _, err := c.ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testNamespaces = append(testNamespaces, name)
}

// dbreader is the reference setup's reader moved to injection, as in
// manifests/examples/dbreaderapp, with the image built here.
func dbreader(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	podLabels := map[string]string{"app": name, spec.LabelInject: "true"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: map[string]string{
					spec.AnnotationVault:                     harness.Vault,
					spec.AnnotationSecretPrefix + "username": harness.DBSecret + "#username",
					spec.AnnotationSecretPrefix + "password": harness.DBSecret + "#password",
				}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            "dbreader",
					TerminationGracePeriodSeconds: ptr.To(int64(2)),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name: "secret-reader", Image: appImage, ImagePullPolicy: corev1.PullIfNotPresent,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

func create(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	if _, err := cluster.Client.AppsV1().Deployments(d.Namespace).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
}

// waitFor polls cond until it holds; on timeout it runs diagnose (what a
// failure needs to be understood) and fails the test.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error), diagnose ...func()) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			for _, d := range diagnose {
				d()
			}
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func pods(t *testing.T, ns, app string) []corev1.Pod {
	t.Helper()
	list, err := cluster.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitRunning waits until n pods of the app run and are ready.
func waitRunning(t *testing.T, ns, app string, n int) []corev1.Pod {
	t.Helper()
	var got []corev1.Pod
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d running pods of %s/%s", n, ns, app), func() (bool, error) {
		got = nil
		for _, p := range pods(t, ns, app) {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && ready(p) {
				got = append(got, p)
			}
		}
		if len(got) == n {
			return true, nil
		}
		return false, fmt.Errorf("%d of %d running; %s", len(got), n, describePods(pods(t, ns, app)))
	}, func() { diagnoseNotReady(t, ns, app) })
	return got
}

// diagnoseNotReady logs, for each pod of app that is not ready, its
// agent's log (and the previous run's, after a restart), its containers'
// states and its events.
func diagnoseNotReady(t *testing.T, ns, app string) {
	t.Helper()
	for _, p := range pods(t, ns, app) {
		if p.Status.Phase == corev1.PodRunning && ready(p) {
			continue
		}
		t.Logf("pod %s/%s not ready: %s", ns, p.Name, describePods([]corev1.Pod{p}))
		for _, s := range p.Status.InitContainerStatuses {
			if s.Name != spec.AgentContainerName {
				continue
			}
			t.Logf("agent of %s (restarts %d):\n%s", p.Name, s.RestartCount, logs(t, ns, p.Name, spec.AgentContainerName, false))
			if s.RestartCount > 0 {
				t.Logf("agent of %s, previous run:\n%s", p.Name, logs(t, ns, p.Name, spec.AgentContainerName, true))
			}
		}
		ev, err := cluster.KubectlOut(context.Background(), nil, "-n", ns, "get", "events", "--sort-by=.lastTimestamp",
			"--field-selector", "involvedObject.name="+p.Name)
		if err != nil {
			t.Logf("events of %s: %v", p.Name, err)
			continue
		}
		t.Logf("events of %s:\n%s", p.Name, ev)
	}
	if out, err := cluster.KubectlOut(context.Background(), nil, "-n", harness.KvinjectNS, "logs", "-l", "app.kubernetes.io/component=cache",
		"--tail=40", "--prefix"); err == nil {
		t.Logf("the cache's last log lines:\n%s", out)
	}
}

func ready(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describePods(ps []corev1.Pod) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s %s", p.Name, p.Status.Phase)
		for _, s := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			switch {
			case s.State.Waiting != nil:
				fmt.Fprintf(&b, " %s:%s", s.Name, s.State.Waiting.Reason)
			case s.State.Terminated != nil:
				fmt.Fprintf(&b, " %s:exit %d", s.Name, s.State.Terminated.ExitCode)
			}
		}
		b.WriteString("; ")
	}
	return b.String()
}

func logs(t *testing.T, ns, pod, container string, previous bool) string {
	t.Helper()
	args := []string{"-n", ns, "logs", pod, "-c", container}
	if previous {
		args = append(args, "--previous")
	}
	b, err := cluster.KubectlOut(context.Background(), nil, args...)
	if err != nil {
		t.Logf("logs %s/%s -c %s: %v", ns, pod, container, err)
	}
	return string(b)
}

// agentCount returns how many kvinject-agent init containers a pod has.
func agentCount(p corev1.Pod) int {
	n := 0
	for _, c := range p.Spec.InitContainers {
		if c.Name == spec.AgentContainerName {
			n++
		}
	}
	return n
}

// fingerprint is what the demo app prints of a value instead of the value.
func fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])[:12]
}

// Scenario 1: the demo workload. The files hold the right values with the
// right modes on a tmpfs, and the app container reads them.
func TestDemoWorkload(t *testing.T) {
	const ns = "e2e-demo"
	namespace(t, ns, nil)
	create(t, dbreader(ns, "dbreaderapp", 1))
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]
	if agentCount(p) != 1 || p.Spec.InitContainers[0].Name != spec.AgentContainerName || p.Annotations[spec.AnnotationStatus] != spec.StatusInjected {
		t.Errorf("pod not injected as the contract says: init containers %v, status %q", p.Spec.InitContainers, p.Annotations[spec.AnnotationStatus])
	}
	out := logs(t, ns, p.Name, "secret-reader", false)
	for name, value := range map[string]string{"username": harness.DBUsername, "password": harness.DBPassword} {
		want := fmt.Sprintf("dbreader: %s = %s (%d bytes, mode 0444, sha256 %s...)", name, value[:1]+strings.Repeat("*", len(value)-1), len(value), fingerprint(value))
		if !strings.Contains(out, want) {
			t.Errorf("app output lacks %q:\n%s", want, out)
		}
	}

	// On the node: the volume is a tmpfs holding exactly the two files.
	dir := filepath.Join(cluster.StateDir, "kubelet/pods", string(p.UID), "volumes/kubernetes.io~empty-dir", spec.SecretsVolumeName)
	if fs := mountType(t, dir); fs != "tmpfs" {
		t.Errorf("%s is mounted as %q, want tmpfs", dir, fs)
	}
	for name, value := range map[string]string{"username": harness.DBUsername, "password": harness.DBPassword} {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != value {
			t.Errorf("%s holds %d bytes, not the expected value", name, len(b))
		}
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o444 {
			t.Errorf("%s has mode %04o, want 0444 (the app's user is not known at admission)", name, info.Mode().Perm())
		}
	}
	agentLog := logs(t, ns, p.Name, spec.AgentContainerName, false)
	if !strings.Contains(agentLog, `"msg":"fetched secret"`) || !strings.Contains(agentLog, `"name":"app-pgsql"`) {
		t.Errorf("agent log lacks the fetched secret line:\n%s", agentLog)
	}
}

// mountType returns the file system type mounted at dir, from /proc/mounts.
func mountType(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == dir {
			return fields[2]
		}
	}
	return ""
}

// Scenario 2: five replicas, each injected exactly once, all running; the
// API server calls the webhook once per pod (nothing changes the pod after
// it, so it is not called again), and the agent holds no API token.
func TestScaleToFive(t *testing.T) {
	const ns = "e2e-scale"
	namespace(t, ns, nil)
	ctx := context.Background()
	callsBefore, err := cluster.WebhookCalls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create(t, dbreader(ns, "dbreaderapp", 5))
	running := waitRunning(t, ns, "dbreaderapp", 5)
	callsAfter, err := cluster.WebhookCalls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if calls := callsAfter - callsBefore; calls != float64(len(running)) {
		t.Errorf("the API server called the webhook %v times for %d pods, want once per pod", calls, len(running))
	}
	for _, p := range running {
		if n := agentCount(p); n != 1 {
			t.Errorf("pod %s has %d agents", p.Name, n)
		}
		checkNoAPIToken(t, p)
		if vols := countVolumes(p, spec.SecretsVolumeName) + countVolumes(p, spec.TokenVolumeName); vols != 2 {
			t.Errorf("pod %s has %d kvinject volumes, want 2", p.Name, vols)
		}
	}
}

// checkNoAPIToken asserts that the agent mounts no volume holding a
// Kubernetes API token: the API token's path is covered by kvinject's own
// projected token, whose audience the API server does not accept.
func checkNoAPIToken(t *testing.T, p corev1.Pod) {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		vols[v.Name] = v
	}
	agent := p.Spec.InitContainers[0]
	for _, m := range agent.VolumeMounts {
		v := vols[m.Name]
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if tok := src.ServiceAccountToken; tok != nil && tok.Audience != spec.TokenAudience {
				t.Errorf("pod %s: the agent mounts %s, an API token (audience %q), at %s", p.Name, m.Name, tok.Audience, m.MountPath)
			}
		}
		if m.MountPath == spec.APITokenMountPath && m.Name != spec.TokenVolumeName {
			t.Errorf("pod %s: the agent has %s at the API token's path", p.Name, m.Name)
		}
	}
	// The app keeps its own API token, as the ServiceAccount plugin gives it.
	hasAPIToken := false
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		hasAPIToken = hasAPIToken || m.MountPath == spec.APITokenMountPath
	}
	if !hasAPIToken {
		t.Errorf("pod %s: the app lost its API token mount", p.Name)
	}
}

func countVolumes(p corev1.Pod, name string) int {
	n := 0
	for _, v := range p.Spec.Volumes {
		if v.Name == name {
			n++
		}
	}
	return n
}

// Scenario 3: a namespace enforcing Pod Security "restricted" admits the
// injected pods. The app runs as a known user, so the agent runs as that
// user too and the files are 0400.
func TestPodSecurityRestricted(t *testing.T) {
	const ns = "e2e-restricted"
	namespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Spec.SecurityContext.RunAsUser = ptr.To(int64(1000))
	d.Spec.Template.Spec.SecurityContext.RunAsGroup = ptr.To(int64(1000))
	create(t, d)
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]
	if u := p.Spec.InitContainers[0].SecurityContext.RunAsUser; u == nil || *u != 1000 {
		t.Errorf("agent runAsUser = %v, want the app's 1000", u)
	}
	if out := logs(t, ns, p.Name, "secret-reader", false); !strings.Contains(out, "mode 0400") {
		t.Errorf("files are not 0400 for a known user:\n%s", out)
	}
}

// Scenario 4: a pod without the label never reaches the webhook.
func TestUnlabelledPodUntouched(t *testing.T) {
	const ns = "e2e-plain"
	namespace(t, ns, nil)
	before := admissions(t)
	d := dbreader(ns, "plain", 1)
	delete(d.Spec.Template.Labels, spec.LabelInject)
	d.Spec.Template.Spec.Containers[0].Command = []string{"/dbreader", "-dir", "/", "-files", "dbreader"}
	create(t, d)
	p := waitRunning(t, ns, "plain", 1)[0]
	if len(p.Spec.InitContainers) != 0 || p.Annotations[spec.AnnotationStatus] != "" || countVolumes(p, spec.SecretsVolumeName) != 0 {
		t.Errorf("unlabelled pod was changed: %+v", p.Spec)
	}
	if after := admissions(t); after != before {
		t.Errorf("the webhook saw %v admissions for an unlabelled pod", after-before)
	}
}

var counterLine = regexp.MustCompile(`^kvinject_injections_total\{result="[a-z]+"\} ([0-9.e+]+)$`)

// admissions sums kvinject_injections_total over the webhook's pods.
func admissions(t *testing.T) float64 {
	t.Helper()
	list, err := cluster.Client.CoreV1().Pods(harness.KvinjectNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kvinject,app.kubernetes.io/component=webhook"})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("list webhook pods: %v (%d)", err, len(list.Items))
	}
	token := metricsToken(t)
	// The serving certificate names the Service, not the pod addresses
	// scraped here one by one.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	total := 0.0
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || !ready(p) {
			continue // a replica of an earlier rollout, on its way out
		}
		req, _ := http.NewRequest(http.MethodGet, "https://"+p.Status.PodIP+":8443/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("metrics of %s: %v", p.Name, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("metrics of %s: HTTP %d", p.Name, resp.StatusCode)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if m := counterLine.FindStringSubmatch(line); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				total += v
			}
		}
	}
	return total
}

// metricsToken is a token of a ServiceAccount bound to the shipped
// kvinject-metrics-reader role, as a Prometheus would have.
func metricsToken(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	const name = "e2e-metrics"
	c := cluster.Client
	if _, err := c.CoreV1().ServiceAccounts(harness.KvinjectNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kvinject-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: harness.KvinjectNS}}}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := c.CoreV1().ServiceAccounts(harness.KvinjectNS).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// failedAgent waits for the app's pod to have a failed agent and returns the
// pod and the agent's termination message and log.
func failedAgent(t *testing.T, ns, app string) (corev1.Pod, string) {
	t.Helper()
	var pod corev1.Pod
	var msg string
	waitFor(t, 3*time.Minute, "the agent of "+ns+"/"+app+" to fail", func() (bool, error) {
		for _, p := range pods(t, ns, app) {
			for _, s := range p.Status.InitContainerStatuses {
				if s.Name != spec.AgentContainerName {
					continue
				}
				term := s.State.Terminated
				if term == nil {
					term = s.LastTerminationState.Terminated
				}
				if term != nil && term.ExitCode != 0 {
					pod, msg = p, term.Message
					return true, nil
				}
			}
		}
		return false, nil
	})
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Running != nil || s.State.Terminated != nil || s.LastTerminationState.Terminated != nil {
			t.Errorf("app container %s started although the agent failed", s.Name)
		}
	}
	return pod, msg
}

// Scenario 5: no federated credential for the pod's ServiceAccount: the
// agent fails with AADSTS700213 and the token's own subject, in the init
// container's status and in its log; the app never starts.
func TestNoFederatedCredential(t *testing.T) {
	const ns = "e2e-nofed"
	namespace(t, ns, nil)
	create(t, dbreader(ns, "dbreaderapp", 1))
	p, msg := failedAgent(t, ns, "dbreaderapp")
	subject := "system:serviceaccount:" + ns + ":dbreader"
	for _, want := range []string{"AADSTS700213", `sub="` + subject + `"`, `iss="` + cluster.IssuerURL + `"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	agentLogWith(t, ns, p.Name, "AADSTS700213", subject)
}

// agentLogWith waits until the log of the pod's failing agent, of its
// current run or the one before, holds every one of wants. The kubelet
// restarts a failed agent: while it replaces the container, neither log
// may be readable for a moment.
func agentLogWith(t *testing.T, ns, pod string, wants ...string) {
	t.Helper()
	ctx := context.Background()
	var log string
	waitFor(t, time.Minute, "the agent's log of "+ns+"/"+pod+" to hold "+strings.Join(wants, ", "), func() (bool, error) {
		log = ""
		var last error
		for _, previous := range []bool{false, true} {
			b, err := cluster.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: spec.AgentContainerName, Previous: previous}).DoRaw(ctx)
			if err != nil {
				last = err
				continue
			}
			log += string(b)
		}
		for _, w := range wants {
			if !strings.Contains(log, w) {
				return false, fmt.Errorf("log lacks %q (last error reading it: %v)", w, last)
			}
		}
		return true, nil
	}, func() { t.Logf("the agent's log:\n%s", log) })
}

// Scenario 6a: a secret that does not exist: the diagnostic names it.
func TestMissingSecret(t *testing.T) {
	const ns = "e2e-missing"
	namespace(t, ns, nil)
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Annotations[spec.AnnotationSecretPrefix+"password"] = "app-pgsql-typo#password"
	create(t, d)
	_, msg := failedAgent(t, ns, "dbreaderapp")
	if want := `secret app-pgsql-typo: no secret named "app-pgsql-typo" in the vault (404 SecretNotFound)`; !strings.Contains(msg, want) {
		t.Errorf("termination message lacks %q:\n%s", want, msg)
	}
}

// Scenario 6b: a burst of 429s from Key Vault: the agent retries and the
// pod starts.
func TestThrottledVault(t *testing.T) {
	const ns = "e2e-throttled"
	namespace(t, ns, nil)
	ctx := context.Background()
	if err := emu.Admin(ctx, "POST", "/faults", map[string]any{"class": "kv-get", "count": 3, "kind": "throttle", "retryAfter": "1s"}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Admin(ctx, "POST", "/faults/clear", nil, nil) })
	create(t, dbreader(ns, "dbreaderapp", 1))
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == spec.AgentContainerName && s.RestartCount != 0 {
			t.Errorf("the agent restarted %d times; the SDK's retries should have absorbed the 429s", s.RestartCount)
		}
	}
	var stats struct {
		Classes map[string]struct {
			Status map[string]int `json:"status"`
		} `json:"classes"`
	}
	if err := emu.Admin(ctx, "GET", "/stats", nil, &stats); err != nil {
		t.Fatal(err)
	}
	if n := stats.Classes["kv-get"].Status["429"]; n < 3 {
		t.Errorf("the emulator answered %d 429s, want at least 3 (stats %+v)", n, stats.Classes["kv-get"])
	}
}

// Scenario 7: a bad annotation: the ReplicaSet's event carries the
// webhook's denial naming the annotation.
func TestBadAnnotationDenied(t *testing.T) {
	const ns = "e2e-denied"
	namespace(t, ns, nil)
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Annotations["kvinject.io/secrets-password"] = "app-pgsql#password"
	create(t, d)
	want := "kvinject.io/secrets-password: unknown annotation, did you mean kvinject.io/secret-password?"
	waitFor(t, 2*time.Minute, "a FailedCreate event naming the annotation", func() (bool, error) {
		return replicaSetEvent(t, ns, want), nil
	})
	if len(pods(t, ns, "dbreaderapp")) != 0 {
		t.Errorf("a denied pod exists")
	}
}

func replicaSetEvent(t *testing.T, ns, contains string) bool {
	t.Helper()
	evs, err := cluster.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "ReplicaSet" && e.Reason == "FailedCreate" && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

// The self-signed certificate rotates while pods are admitted: with a
// serving certificate of 45s (renewed every 30s) and a CA of 2m (renewed at
// 80s), both are replaced during 100s of admissions, and none fails.
func TestCertificateRotation(t *testing.T) {
	const ns = "e2e-rotation"
	namespace(t, ns, nil)
	ctx := context.Background()
	patch := `[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--self-signed-cert-validity=45s"},` +
		`{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--self-signed-ca-validity=2m"}]`
	if _, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "patch", "deployment/"+harness.WebhookDeploy, "--type=json", "-p", patch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Deploy(context.Background(), image, emu); err != nil {
			t.Errorf("restore kvinject: %v", err)
		}
	})
	if _, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "rollout", "status", "deployment/"+harness.WebhookDeploy, "--timeout=180s"); err != nil {
		t.Fatal(err)
	}
	certs := func() (serving, ca string) {
		sec, err := cluster.Client.CoreV1().Secrets(harness.KvinjectNS).Get(ctx, "kvinject-webhook-cert", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("read the webhook's certificate Secret: %v", err)
		}
		return fingerprint(string(sec.Data["tls.crt"])), fingerprint(string(sec.Data["ca.crt"]))
	}
	servingSeen, caSeen := map[string]bool{}, map[string]bool{}
	pod := dbreader(ns, "rotation", 1).Spec.Template
	admitted, failed := 0, 0
	for end := time.Now().Add(100 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		p := &corev1.Pod{ObjectMeta: *pod.ObjectMeta.DeepCopy(), Spec: *pod.Spec.DeepCopy()}
		p.GenerateName = "rotation-"
		got, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err != nil:
			failed++
			t.Errorf("admission failed during rotation: %v", err)
		case got.Annotations[spec.AnnotationStatus] != spec.StatusInjected:
			failed++
			t.Errorf("pod admitted without injection")
		default:
			admitted++
		}
		s, c := certs()
		servingSeen[s], caSeen[c] = true, true
	}
	t.Logf("%d admissions, %d failed; %d serving certificates and %d CAs seen", admitted, failed, len(servingSeen), len(caSeen))
	if len(servingSeen) < 2 || len(caSeen) < 2 {
		t.Errorf("saw %d serving certificates and %d CAs in 100s, want a rotation of each", len(servingSeen), len(caSeen))
	}
}

// Scenario 8: the webhook down with failurePolicy Fail: opted-in pods are
// refused, other pods start. Then it comes back.
func TestWebhookDown(t *testing.T) {
	const ns = "e2e-down"
	namespace(t, ns, nil)
	ctx := context.Background()
	scale(t, 0)
	t.Cleanup(func() { scale(t, 2) })
	create(t, dbreader(ns, "dbreaderapp", 1))
	plain := dbreader(ns, "plain", 1)
	delete(plain.Spec.Template.Labels, spec.LabelInject)
	plain.Spec.Template.Spec.Containers[0].Command = []string{"/dbreader", "-dir", "/", "-files", "dbreader"}
	create(t, plain)
	waitRunning(t, ns, "plain", 1)
	waitFor(t, 2*time.Minute, "a FailedCreate event for the opted-in pod", func() (bool, error) {
		return replicaSetEvent(t, ns, `failed calling webhook "pods.kvinject.io"`), nil
	})
	if len(pods(t, ns, "dbreaderapp")) != 0 {
		t.Errorf("an opted-in pod was created while the webhook was down")
	}
	scale(t, 2)
	// The ReplicaSet retries with back-off; once the webhook is back the pod comes.
	if _, err := cluster.KubectlOut(ctx, nil, "-n", ns, "rollout", "restart", "deployment/dbreaderapp"); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "dbreaderapp", 1)
}

func scale(t *testing.T, replicas int) {
	t.Helper()
	ctx := context.Background()
	if _, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "scale", "deployment/"+harness.WebhookDeploy, "--replicas="+strconv.Itoa(replicas)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, fmt.Sprintf("the webhook at %d replicas", replicas), func() (bool, error) {
		d, err := cluster.Client.AppsV1().Deployments(harness.KvinjectNS).Get(ctx, harness.WebhookDeploy, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		list, err := cluster.Client.CoreV1().Pods(harness.KvinjectNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kvinject,app.kubernetes.io/component=webhook"})
		if err != nil {
			return false, err
		}
		return int(d.Status.ReadyReplicas) == replicas && len(list.Items) == replicas, nil
	})
}

// TestRootPod: a pod that runs as root still gets its files. The agent runs
// as a non-root uid it names, never the pod's 0, and the app (root with
// every capability dropped, so no CAP_DAC_OVERRIDE) reads a default 0444 file
// and a 0440 file through the pod's fsGroup.
func TestRootPod(t *testing.T) {
	const ns = "e2e-root"
	namespace(t, ns, nil)
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Annotations[spec.AnnotationPermsPrefix+"password"] = "0440"
	d.Spec.Template.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser:      ptr.To(int64(0)),
		RunAsNonRoot:   ptr.To(false),
		FSGroup:        ptr.To(int64(2000)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	create(t, d)
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]
	if u := p.Spec.InitContainers[0].SecurityContext.RunAsUser; u == nil || *u != spec.AgentFallbackUser {
		t.Errorf("agent runAsUser = %v, want %d", u, spec.AgentFallbackUser)
	}
	out := logs(t, ns, p.Name, "secret-reader", false)
	for name, mode := range map[string]string{"username": "0444", "password": "0440"} {
		read := false
		for _, line := range strings.Split(out, "\n") {
			read = read || strings.HasPrefix(line, "dbreader: "+name+" = ") && strings.Contains(line, "mode "+mode+",")
		}
		if !read {
			t.Errorf("the root app did not read %s with mode %s:\n%s", name, mode, out)
		}
	}
}

// TestRefreshSidecar: kvinject.io/refresh on the real kubelet. A secret
// rotated in the vault reaches the files, and an app that watches them,
// within one interval and its jitter; an outage keeps the files and the pod
// Ready, said once and its end once; a secret deleted in the vault keeps the
// last good set and is reported; deleting the pod ends the sidecar at once.
func TestRefreshSidecar(t *testing.T) {
	const (
		ns       = "e2e-refresh"
		secret   = "refresh-pgsql"
		interval = time.Minute
		// One interval, its jitter (10%) and the time for the app to notice.
		within = interval + interval/10 + 20*time.Second
	)
	namespace(t, ns, nil)
	ctx := context.Background()
	setSecret := func(password string) {
		t.Helper()
		v := fmt.Sprintf(`{"username":"refresher","password":%q}`, password)
		if err := emu.Admin(ctx, "POST", "/secrets", map[string]string{"vault": harness.Vault, "name": secret, "value": v, "contentType": "application/json"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	setSecret("first-password")
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Annotations[spec.AnnotationSecretPrefix+"username"] = secret + "#username"
	d.Spec.Template.Annotations[spec.AnnotationSecretPrefix+"password"] = secret + "#password"
	d.Spec.Template.Annotations[spec.AnnotationRefresh] = interval.String()
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To(int64(30))
	d.Spec.Template.Spec.Containers[0].Args = []string{"--watch=1s"}
	create(t, d)
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]
	if len(p.Spec.InitContainers) < 2 || p.Spec.InitContainers[1].Name != spec.RefreshContainerName {
		t.Fatalf("no %s sidecar after the agent: %v", spec.RefreshContainerName, p.Spec.InitContainers)
	}
	sidecarLog := func() string { return logs(t, ns, p.Name, spec.RefreshContainerName, false) }
	file := filepath.Join(cluster.StateDir, "kubelet/pods", string(p.UID), "volumes/kubernetes.io~empty-dir", spec.SecretsVolumeName, "password")
	holds := func(v string) bool {
		b, err := os.ReadFile(file)
		return err == nil && string(b) == v
	}
	stillReady := func(what string) {
		t.Helper()
		got, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || !ready(*got) {
			t.Errorf("%s: the pod is not Ready (%v)", what, err)
		}
	}

	// Rotation.
	setSecret("second-password")
	rotated := time.Now()
	waitFor(t, within, "the rotated password in the file and the app", func() (bool, error) {
		return holds("second-password") && strings.Contains(logs(t, ns, p.Name, "secret-reader", false), "sha256 "+fingerprint("second-password")), nil
	})
	t.Logf("rotation reached the app %v after the vault changed", time.Since(rotated).Round(time.Second))
	if !holds("second-password") || !strings.Contains(sidecarLog(), `"msg":"wrote files"`) {
		t.Errorf("the sidecar did not log its write:\n%s", sidecarLog())
	}

	// Outage: every Key Vault read fails.
	if err := emu.Admin(ctx, "POST", "/knobs", map[string]any{"faultRate": 1, "rateFaults": []map[string]string{{"kind": "unavailable"}}, "rateClasses": []string{"kv-get"}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Admin(ctx, "POST", "/knobs", map[string]any{}, nil) })
	// The SDK retries a 503 five times (about 25 s) before the refresh fails.
	waitFor(t, within+30*time.Second, "the sidecar saying the refresh failed", func() (bool, error) {
		return strings.Contains(sidecarLog(), "refresh failed: the files stay as they are"), nil
	})
	time.Sleep(25 * time.Second) // a retry or two (backoff from 10s)
	if !holds("second-password") {
		t.Error("the outage changed the file")
	}
	stillReady("during the outage")
	if n := strings.Count(sidecarLog(), "error: vault "); n != 1 {
		t.Errorf("the outage was said %d times, want once:\n%s", n, sidecarLog())
	}
	if err := emu.Admin(ctx, "POST", "/knobs", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, within, "the sidecar saying the refresh recovered", func() (bool, error) {
		return strings.Contains(sidecarLog(), `"msg":"refresh recovered"`), nil
	})

	// Deletion in the vault: the last good set stays and the sidecar says why.
	if err := emu.Admin(ctx, "POST", "/secrets/delete", map[string]string{"vault": harness.Vault, "name": secret}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, within, "the deletion reported", func() (bool, error) {
		return strings.Contains(sidecarLog(), `no secret named "`+secret+`"`), nil
	})
	if !holds("second-password") {
		t.Error("the deletion changed the file")
	}
	stillReady("after the deletion")

	// Deleting the pod: app and sidecar end on SIGTERM, well within the grace period.
	t0 := time.Now()
	if err := cluster.Client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 25*time.Second, "the pod gone", func() (bool, error) {
		_, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if took := time.Since(t0); took > 15*time.Second {
		t.Errorf("the pod took %v to end with a 30s grace period: the sidecar did not stop at once", took)
	}
}

// envValues are the value classes an env variable must carry byte for byte
// from Key Vault through the kubelet's env file into the app's environment.
var envValues = map[string]string{
	"SPACES":   "a value with  spaces ",
	"DQUOTE":   `say "hello"`,
	"HASH":     "#not a comment # nor this",
	"EQUALS":   "a=b==c",
	"DOLLAR":   "$HOME ${PATH} $(id) `id`",
	"UNICODE":  "Grüße, 世界 🌍",
	"NEWLINES": "line one\nline two\n",
}

// TestOnChange: kvinject.io/on-change, restart and signal:SIGHUP side by side
// (onchange_test.go). Its apps run the image as imported into containerd, so
// it runs before TestReferenceDeployment pulls the same image from the mirror
// with a credential, for the reason TestEnvExecDelivery gives.
func TestOnChange(t *testing.T) {
	t.Run("restart", onChangeRestart)
	t.Run("signal", onChangeSignal)
}

// TestEnvFromKeyVault: kvinject.io/env- on the real kubelet (EnvFiles). The
// reference Deployment's env entries, which read ESO's Secret pgsql-creds
// (absent here), are replaced in place; more variables carry every value
// class byte for byte; the app container mounts no volume; Pod Security
// restricted admits the pod; no value is in the pod spec.
func TestEnvFromKeyVault(t *testing.T) {
	const (
		ns     = "e2e-env"
		secret = "env-values"
	)
	namespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ctx := context.Background()
	b, err := json.Marshal(envValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Admin(ctx, "POST", "/secrets", map[string]string{"vault": harness.Vault, "name": secret, "value": string(b), "contentType": "application/json"}, nil); err != nil {
		t.Fatal(err)
	}
	d := dbreader(ns, "dbreaderapp", 1)
	ann := map[string]string{
		spec.AnnotationVault:                  harness.Vault,
		spec.AnnotationEnvPrefix + "USERNAME": harness.DBSecret + "#username",
		spec.AnnotationEnvPrefix + "PASSWORD": harness.DBSecret + "#password",
	}
	var names []string
	for name := range envValues {
		ann[spec.AnnotationEnvPrefix+name] = secret + "#" + name
		names = append(names, name)
	}
	sort.Strings(names)
	d.Spec.Template.Annotations = ann
	d.Spec.Template.Spec.SecurityContext.RunAsUser = ptr.To(int64(1000))
	d.Spec.Template.Spec.SecurityContext.RunAsGroup = ptr.To(int64(1000))
	c := &d.Spec.Template.Spec.Containers[0]
	// As the reference setup has it: the variables come from ESO's Secret.
	for _, v := range []struct{ name, key string }{{"USERNAME", "username"}, {"PASSWORD", "password"}} {
		c.Env = append(c.Env, corev1.EnvVar{Name: v.name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "pgsql-creds"}, Key: v.key}}})
	}
	c.Args = []string{"--files=", "--env=USERNAME,PASSWORD," + strings.Join(names, ",")}
	create(t, d)
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]

	app := p.Spec.Containers[0]
	for _, m := range app.VolumeMounts {
		if m.Name == spec.SecretsVolumeName {
			t.Errorf("the app mounts %s, though it only takes env variables", m.Name)
		}
	}
	for _, e := range app.Env[:2] {
		if e.ValueFrom == nil || e.ValueFrom.FileKeyRef == nil || e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("env %s was not replaced in place by a fileKeyRef: %+v", e.Name, e.ValueFrom)
		}
	}
	out := logs(t, ns, p.Name, "secret-reader", false)
	want := map[string]string{"USERNAME": harness.DBUsername, "PASSWORD": harness.DBPassword}
	for k, v := range envValues {
		want[k] = v
	}
	for name, v := range want {
		line := fmt.Sprintf("dbreader: env %s: %d bytes, sha256 %s...", name, len(v), fingerprint(v))
		if !strings.Contains(out, line) {
			t.Errorf("the app's environment lacks %s byte for byte: want %q in\n%s", name, line, out)
		}
	}
	podSpec, err := json.Marshal(p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range want {
		if strings.Contains(string(podSpec), v) {
			t.Errorf("the pod spec holds the value of %s", name)
		}
	}
}

// TestReferenceDeployment: manifests/examples/dbreaderapp as users apply it.
// The reference setup's Deployment, unchanged apart from the label, the
// annotations and its ServiceAccount, gets USERNAME and PASSWORD from Key
// Vault in the env entries that read ESO's Secret; the file-mode Deployment
// beside it reads files.
func TestReferenceDeployment(t *testing.T) {
	const ns = "group1"
	namespace(t, ns, nil)
	if err := cluster.ApplyDBReader(context.Background(), mirrorImage); err != nil {
		t.Fatal(err)
	}
	envLine := func(name, v string) string {
		return fmt.Sprintf("dbreader: env %s: %d bytes, sha256 %s...", name, len(v), fingerprint(v))
	}
	for app, want := range map[string][]string{
		"dbreaderapp":       {envLine("USERNAME", harness.DBUsername), envLine("PASSWORD", harness.DBPassword)},
		"dbreaderapp-files": {"dbreader: username = ", "dbreader: password = "},
	} {
		p := waitRunning(t, ns, app, 1)[0]
		out := logs(t, ns, p.Name, "secret-reader", false)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s's output lacks %q:\n%s", app, w, out)
			}
		}
	}
}

// TestImagePullCredentialProvider: the kubelet pulls from the mirror
// registry (TLS, basic auth) with the credential in Key Vault, through
// kvinject-credential-provider and the pod's own ServiceAccount token, with
// no imagePullSecrets and no Secret: an injected pod, and a pod that only
// pulls (manifests/pull-credentials). A ServiceAccount without a federated
// credential gets no credential, not even from the kubelet's cache of the
// first one's, and its pod stays in ErrImagePull with AADSTS700213 in the
// kubelet's log.
func TestImagePullCredentialProvider(t *testing.T) {
	const ns = "e2e-pull"
	ctx := context.Background()
	namespace(t, ns, nil)
	if _, err := cluster.KubectlOut(ctx, nil, "apply", "-k", filepath.Join(cluster.Root, "manifests", "pull-credentials")); err != nil {
		t.Fatal(err)
	}
	pullAnnotations := map[string]string{
		spec.SAAnnotationClientID:   harness.ClientID,
		spec.SAAnnotationTenantID:   harness.TenantID,
		spec.SAAnnotationPullSecret: "https://" + harness.Vault + ".vault.azure.net/secrets/" + harness.MirrorCredentialSecret,
	}
	sas := cluster.Client.CoreV1().ServiceAccounts(ns)
	sa, err := sas.Get(ctx, "dbreader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa.Annotations = pullAnnotations
	if _, err := sas.Update(ctx, sa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nofed", Annotations: pullAnnotations}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, password, err := cluster.MirrorCredential()
	if err != nil {
		t.Fatal(err)
	}
	planted = append(planted, password)

	mirrored := func(name, serviceAccount string, injected bool) *appsv1.Deployment {
		d := dbreader(ns, name, 1)
		d.Spec.Template.Spec.ServiceAccountName = serviceAccount
		c := &d.Spec.Template.Spec.Containers[0]
		c.Image, c.ImagePullPolicy = mirrorImage, corev1.PullAlways // every pod start asks the registry
		if !injected {
			delete(d.Spec.Template.Labels, spec.LabelInject)
			d.Spec.Template.Annotations = nil
			c.Args = []string{"--files", ""} // nothing to read: it pulls and runs
		}
		return d
	}
	// An injected pod: the image through the provider, the DB credential
	// through the agent.
	create(t, mirrored("injected", "dbreader", true))
	p := waitRunning(t, ns, "injected", 1)[0]
	if len(p.Spec.ImagePullSecrets) != 0 {
		t.Errorf("imagePullSecrets %v", p.Spec.ImagePullSecrets)
	}
	if out := logs(t, ns, p.Name, "secret-reader", false); !strings.Contains(out, "dbreader: password = ") {
		t.Errorf("the app pulled from the mirror did not read its password:\n%s", out)
	}
	// A pod that only pulls: the kubelet asks for the token itself.
	create(t, mirrored("pull-only", "dbreader", false))
	waitRunning(t, ns, "pull-only", 1)

	// Another ServiceAccount with the same annotations, without a
	// federated credential: after the first one's pulls, still no credential.
	create(t, mirrored("nofed", "nofed", false))
	waitFor(t, 2*time.Minute, "the nofed pod in ErrImagePull or ImagePullBackOff", func() (bool, error) {
		for _, p := range pods(t, ns, "nofed") {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
					return true, nil
				}
				if cs.State.Running != nil {
					return false, fmt.Errorf("the nofed pod runs: it pulled with another ServiceAccount's credential")
				}
			}
		}
		return false, nil
	})
	kubeletLog, err := os.ReadFile(filepath.Join(cluster.StateDir, "logs", "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(kubeletLog), "\n") {
		if strings.Contains(l, "AADSTS700213") && strings.Contains(l, "system:serviceaccount:"+ns+":nofed") {
			line = l
		}
	}
	if line == "" {
		t.Errorf("the kubelet log has no AADSTS700213 line for %s/nofed", ns)
	} else {
		t.Logf("kubelet: %s", line)
	}
}

// TestCertificateHTTPS: a Key Vault certificate (the secret behind it, as
// PKCS#12 with its intermediate) becomes tls.key and tls.crt, and an HTTPS
// server started from them is reached with the root CA alone. A form that
// does not exist and a corrupt bundle fail with their problem lines.
func TestCertificateHTTPS(t *testing.T) {
	const ns, host = "e2e-tls", "web.e2e-tls.svc"
	ctx := context.Background()
	namespace(t, ns, nil)
	chain, err := certtest.NewChain(certtest.RSA, host)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := certtest.PFX(pkcs12.LegacyDES, "", chain.Leaf.Key, chain.Leaf.Cert, chain.Intermediate.Cert)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(chain.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	planted = append(planted, pfx[:64], base64.StdEncoding.EncodeToString(keyDER)[64:128])
	for name, value := range map[string]string{"web-cert": pfx, "broken-cert": base64.StdEncoding.EncodeToString([]byte("not a PKCS#12 file"))} {
		body := map[string]any{"vault": harness.Vault, "name": name, "value": value, "contentType": spec.ContentTypePKCS12, "certificate": true}
		if err := emu.Admin(ctx, http.MethodPost, "/secrets", body, nil); err != nil {
			t.Fatal(err)
		}
	}
	tlsImage, err := cluster.BuildImage(ctx, "./test/e2e/tlsserver", harness.AppImageRepo+"-tls:e2e", setupLog)
	if err != nil {
		t.Fatal(err)
	}
	server := func(name string, refs map[string]string) *appsv1.Deployment {
		d := dbreader(ns, name, 1)
		delete(d.Spec.Template.Annotations, spec.AnnotationSecretPrefix+"username")
		delete(d.Spec.Template.Annotations, spec.AnnotationSecretPrefix+"password")
		for file, ref := range refs {
			d.Spec.Template.Annotations[spec.AnnotationSecretPrefix+file] = ref
		}
		// A known user: tls.key defaults to 0400, readable by the app alone.
		d.Spec.Template.Spec.SecurityContext.RunAsUser = ptr.To(int64(1000))
		c := &d.Spec.Template.Spec.Containers[0]
		c.Name, c.Image = "web", tlsImage
		c.Ports = []corev1.ContainerPort{{Name: "https", ContainerPort: 8443}}
		return d
	}
	create(t, server("web", map[string]string{"tls.key": "web-cert#key", "tls.crt": "web-cert#fullchain"}))
	create(t, server("wrong-form", map[string]string{"tls.key": "web-cert#private"}))
	create(t, server("corrupt", map[string]string{"tls.crt": "broken-cert#fullchain"}))

	p := waitRunning(t, ns, "web", 1)[0]
	roots := x509.NewCertPool()
	roots.AddCert(chain.Root.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}}}
	var body []byte
	var state *tls.ConnectionState
	waitFor(t, time.Minute, "an HTTPS answer from "+p.Status.PodIP, func() (bool, error) {
		resp, err := client.Get("https://" + p.Status.PodIP + ":8443/")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		state = resp.TLS
		return err == nil, nil
	})
	if want := fmt.Sprintf("serial %s\n", chain.Leaf.Cert.SerialNumber); string(body) != want {
		t.Errorf("answer %q, want %q", body, want)
	}
	if got := state.PeerCertificates; len(got) != 2 || !got[0].Equal(chain.Leaf.Cert) || !got[1].Equal(chain.Intermediate.Cert) {
		t.Errorf("the server sent %d certificates, want the leaf then the intermediate", len(got))
	}

	_, msg := failedAgent(t, ns, "wrong-form")
	if want := "secret web-cert#private, file tls.key: the secret is a certificate (PKCS#12) and #private is not one of its forms. Fix: use #key, #cert, #chain, #fullchain, #ca, #pfx"; !strings.Contains(msg, want) {
		t.Errorf("termination message lacks %q:\n%s", want, msg)
	}
	_, msg = failedAgent(t, ns, "corrupt")
	if want := "secret broken-cert, file tls.crt: the value (18 bytes of PKCS#12) does not decode as one private key with its certificates"; !strings.Contains(msg, want) {
		t.Errorf("termination message lacks %q:\n%s", want, msg)
	}
}

// TestEnvExecDelivery: env variables through the exec wrapper
// (delivery_exec_test.go). It runs here, after the tests that run the app
// image as imported into containerd: once the kubelet has pulled the same
// image from the mirror registry with a credential, it makes every later pod
// of that image prove its access (ensure-secret-pulled-images), and the
// imported name is no registry. And before TestZNoSecretsAnywhere, which
// reads its logs.
func TestEnvExecDelivery(t *testing.T) { envExecDelivery(t) }

// TestNodeModePull: image pulls through the credential provider's node mode
// on a kubelet that sends no ServiceAccount token (e2e_nodepull_test.go).
// It pulls the app image from the mirror too, so it runs after every test of
// the imported image, for the reason TestEnvExecDelivery gives.
func TestNodeModePull(t *testing.T) { nodeModePull(t) }

// TestCertManagerInstalls: the cert-manager installs (kustomize and Helm)
// with cert-manager's own controllers (certmanager_test.go). It replaces the
// suite's installation and puts it back, so it runs after every other test
// of that installation.
func TestCertManagerInstalls(t *testing.T) { certManagerInstalls(t) }

// Scenario 9, last: no Kubernetes Secret in any test namespace, and no
// planted secret value in any log of the run.
func TestZNoSecretsAnywhere(t *testing.T) {
	ctx := context.Background()
	for _, ns := range testNamespaces {
		list, err := cluster.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 0 {
			t.Errorf("namespace %s has %d Secrets", ns, len(list.Items))
		}
	}
	logsToCheck := map[string]string{"emulator": emu.LogFile}
	for _, dir := range []string{"logs", "pod-logs"} {
		filepath.Walk(filepath.Join(cluster.StateDir, dir), func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				logsToCheck[path] = path
			}
			return nil
		})
	}
	// Logs through the API too (webhook and agents), as a user reads them.
	for _, ns := range append([]string{harness.KvinjectNS}, testNamespaces...) {
		list, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
				b, err := cluster.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
				if err != nil {
					continue // not started: nothing logged
				}
				path := filepath.Join(t.TempDir(), p.Name+"-"+c.Name+".log")
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				logsToCheck["kubectl logs -n "+ns+" "+p.Name+" -c "+c.Name] = path
			}
		}
	}
	checked := 0
	for name, path := range logsToCheck {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		checked++
		for _, v := range planted {
			if strings.Contains(string(b), v) {
				t.Errorf("%s (%s) contains a planted secret value", name, path)
			}
		}
	}
	if checked < 5 {
		t.Errorf("only %d logs checked", checked)
	}
}

// planted are the values no log may hold: the reference secret's, and the
// ones the refresh and env tests put into the vault.
var planted = func() []string {
	vs := []string{harness.DBPassword, harness.DBUsername, "first-password", "second-password"}
	for _, v := range envValues {
		vs = append(vs, v)
	}
	return vs
}()
