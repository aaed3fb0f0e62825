//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// onChange timings on the real kubelet: refresh every minute; a rotation
// reaches the sidecar within one interval and its jitter (10%); the
// liveness check fails twice, 10 s apart, before the kubelet restarts the
// container; 30 s more for the kill, the start and the app's first read.
const (
	onChangeInterval = time.Minute
	onChangeWithin   = onChangeInterval + onChangeInterval/10 + 10*time.Second + 30*time.Second
	// onChangeQuiet is how long nothing changes after the last rotation
	// while no restart and no signal may happen: more than two refreshes.
	onChangeQuiet = 2*onChangeInterval + onChangeInterval/2
)

// onChangePod is a restricted pod reading secret from the emulator with a
// refresh each minute and kvinject.io/on-change, running as 65532:65532.
func onChangePod(ns, secret, action string) *corev1.Pod {
	d := dbreader(ns, "onchange", 1)
	pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
	pod.Name, pod.Namespace = "onchange", ns
	pod.Annotations = map[string]string{
		spec.AnnotationVault:                     harness.Vault,
		spec.AnnotationSecretPrefix + "password": secret + "#password",
		spec.AnnotationRefresh:                   onChangeInterval.String(),
		spec.AnnotationOnChange:                  action,
	}
	pod.Spec.SecurityContext.RunAsUser = ptr.To[int64](65532)
	pod.Spec.SecurityContext.RunAsGroup = ptr.To[int64](65532)
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
	return pod
}

func setPassword(t *testing.T, secret, password string) {
	t.Helper()
	v := fmt.Sprintf(`{"username":"onchange","password":%q}`, password)
	if err := emu.Admin(context.Background(), "POST", "/secrets", map[string]string{"vault": harness.Vault, "name": secret, "value": v, "contentType": "application/json"}, nil); err != nil {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := cluster.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	var got *corev1.Pod
	waitFor(t, 3*time.Minute, "pod "+pod.Name+" ready", func() (bool, error) {
		p, err := cluster.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		return p.Status.Phase == corev1.PodRunning && ready(*p), fmt.Errorf("%s", describePods([]corev1.Pod{*p}))
	})
	return got
}

func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := cluster.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func restartCounts(p *corev1.Pod) map[string]int32 {
	out := map[string]int32{}
	for _, s := range p.Status.ContainerStatuses {
		out[s.Name] = s.RestartCount
	}
	return out
}

// onChangeRestart: kvinject.io/on-change: restart on the real kubelet.
// An app that reads its password file once at start and one that reads an
// env variable once both serve the rotated value within the bound, each
// restarted exactly once per rotation by its kubelet, in the same pod on
// the same node; the container that reads nothing is never restarted; a
// quiet spell of more than two refreshes restarts nothing; Pod Security
// restricted admits the pod.
func onChangeRestart(t *testing.T) {
	t.Parallel()
	const (
		ns     = "e2e-onchange-restart"
		secret = "onchange-restart"
	)
	namespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	setPassword(t, secret, "first-password")
	pod := onChangePod(ns, secret, spec.OnChangeRestart)
	pod.Annotations[spec.AnnotationEnvPrefix+"PASSWORD"] = secret + "#password"
	pod.Annotations[spec.AnnotationContainers] = "files"
	app := pod.Spec.Containers[0]
	files, env, other := *app.DeepCopy(), *app.DeepCopy(), *app.DeepCopy()
	files.Name, files.Args = "files", []string{"--files=password"}
	env.Name, env.Args = "env", []string{"--files=", "--env=PASSWORD"}
	env.Env = []corev1.EnvVar{{Name: "PASSWORD", Value: "declared here, replaced by kvinject"}}
	other.Name, other.Args = "other", []string{"--files="}
	pod.Spec.Containers = []corev1.Container{files, env, other}
	p := createPod(t, pod)
	uid, node := p.UID, p.Spec.NodeName

	serves := func(container, password string) bool {
		out := logs(t, ns, pod.Name, container, false)
		if container == "env" {
			return strings.Contains(out, fmt.Sprintf("dbreader: env PASSWORD: %d bytes, sha256 %s...", len(password), fingerprint(password)))
		}
		return strings.Contains(out, "sha256 "+fingerprint(password))
	}
	if !serves("files", "first-password") || !serves("env", "first-password") {
		t.Fatalf("the apps do not serve the first password:\n%s\n%s", logs(t, ns, pod.Name, "files", false), logs(t, ns, pod.Name, "env", false))
	}
	for i, password := range []string{"second-password", "third-password"} {
		want := int32(i + 1)
		setPassword(t, secret, password)
		rotated := time.Now()
		// The second restart within 10 minutes waits the kubelet's back-off (10 s).
		within := onChangeWithin + time.Duration(i)*10*time.Second
		waitFor(t, within, fmt.Sprintf("rotation %d served by both apps", want), func() (bool, error) {
			c := restartCounts(getPod(t, ns, pod.Name))
			return c["files"] == want && c["env"] == want && serves("files", password) && serves("env", password), fmt.Errorf("restart counts %v", c)
		}, func() { t.Logf("sidecar:\n%s", logs(t, ns, pod.Name, spec.RefreshContainerName, false)) })
		t.Logf("rotation %d reached both apps %v after the vault changed", want, time.Since(rotated).Round(time.Second))
		got := getPod(t, ns, pod.Name)
		if got.UID != uid || got.Spec.NodeName != node {
			t.Errorf("the pod changed: uid %s node %s, was %s on %s", got.UID, got.Spec.NodeName, uid, node)
		}
		if c := restartCounts(got); c["other"] != 0 {
			t.Errorf("the container that reads nothing restarted: %v", c)
		}
	}
	sidecar := logs(t, ns, pod.Name, spec.RefreshContainerName, false)
	for _, want := range []string{`"container":"files","files":["password"],"secrets":["` + secret + `"]`, `"container":"env","env":["PASSWORD"],"secrets":["` + secret + `"]`} {
		if n := strings.Count(sidecar, want); n != 2 {
			t.Errorf("the sidecar logged %d restarts of %s, want 2:\n%s", n, want, sidecar)
		}
	}

	// Nothing changes: nothing restarts.
	before := restartCounts(getPod(t, ns, pod.Name))
	time.Sleep(onChangeQuiet)
	if after := restartCounts(getPod(t, ns, pod.Name)); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("containers restarted while nothing changed for %v: %v, then %v", onChangeQuiet, before, after)
	}
}

// onChangeSignal: kvinject.io/on-change: signal:SIGHUP on the real
// kubelet. The app reads its file again on SIGHUP and serves the rotated
// value; it gets exactly one SIGHUP per rotation and is never restarted; a
// container of the pod that is not a target gets none; Pod Security
// restricted admits the pod, with the process namespace shared.
func onChangeSignal(t *testing.T) {
	t.Parallel()
	const (
		ns     = "e2e-onchange-signal"
		secret = "onchange-signal"
	)
	namespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	setPassword(t, secret, "first-password")
	pod := onChangePod(ns, secret, spec.OnChangeSignalPrefix+"SIGHUP")
	pod.Annotations[spec.AnnotationContainers] = "app"
	app := pod.Spec.Containers[0]
	app.Name, app.Args = "app", []string{"--files=password", "--reload-on-sighup"}
	other := *app.DeepCopy()
	other.Name, other.Args = "other", []string{"--files=", "--reload-on-sighup"}
	pod.Spec.Containers = []corev1.Container{app, other}
	p := createPod(t, pod)
	if !ptr.Deref(p.Spec.ShareProcessNamespace, false) {
		t.Fatal("the pod does not share its process namespace")
	}
	hups := func(container string) int {
		return strings.Count(logs(t, ns, pod.Name, container, false), "dbreader: SIGHUP ")
	}
	for i, password := range []string{"second-password", "third-password"} {
		setPassword(t, secret, password)
		rotated := time.Now()
		waitFor(t, onChangeInterval+onChangeInterval/10+30*time.Second, fmt.Sprintf("SIGHUP %d and the new value", i+1), func() (bool, error) {
			out := logs(t, ns, pod.Name, "app", false)
			last := strings.LastIndex(out, "dbreader: SIGHUP ")
			return strings.Count(out, "dbreader: SIGHUP ") == i+1 && strings.Contains(out[last:], "sha256 "+fingerprint(password)), nil
		}, func() {
			t.Logf("app:\n%s\nsidecar:\n%s", logs(t, ns, pod.Name, "app", false), logs(t, ns, pod.Name, spec.RefreshContainerName, false))
		})
		t.Logf("rotation %d reached the app %v after the vault changed", i+1, time.Since(rotated).Round(time.Second))
	}
	// A refresh or two without a change: no more signals.
	time.Sleep(onChangeInterval + onChangeInterval/10 + 5*time.Second)
	if got := map[string]int{"app": hups("app"), "other": hups("other")}; got["app"] != 2 || got["other"] != 0 {
		t.Errorf("SIGHUPs %v, want app 2, other 0", got)
	}
	if c := restartCounts(getPod(t, ns, pod.Name)); c["app"] != 0 || c["other"] != 0 {
		t.Errorf("containers restarted: %v", c)
	}
	sidecar := logs(t, ns, pod.Name, spec.RefreshContainerName, false)
	if n := strings.Count(sidecar, `"msg":"signalled container","container":"app","files":["password"],"secrets":["`+secret+`"],"signal":"SIGHUP"`); n != 2 {
		t.Errorf("the sidecar logged %d signals, want 2:\n%s", n, sidecar)
	}
}
