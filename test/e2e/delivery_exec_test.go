//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// webhookEnvDelivery runs the webhook with --env-delivery=mode until the
// test ends, then as it was.
func webhookEnvDelivery(t *testing.T, mode string) {
	t.Helper()
	ctx := context.Background()
	deps := cluster.Client.AppsV1().Deployments(harness.KvinjectNS)
	setArgs := func(f func([]string) []string) {
		t.Helper()
		d, err := deps.Get(ctx, harness.WebhookDeploy, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := &d.Spec.Template.Spec.Containers[0]
		c.Args = f(c.Args)
		if _, err := deps.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "rollout", "status", "deployment/"+harness.WebhookDeploy, "--timeout=180s"); err != nil {
			t.Fatal(err)
		}
	}
	flag := "--env-delivery=" + mode
	setArgs(func(a []string) []string { return append(a, flag) })
	t.Cleanup(func() {
		setArgs(func(a []string) []string { return slices.DeleteFunc(a, func(s string) bool { return s == flag }) })
	})
}

// referenceWithMetrics is the reference setup's Deployment
// (/work/shared/examples/eso, as manifests/examples/dbreaderapp moves it to
// kvinject): no command, the image's ENTRYPOINT, USERNAME and PASSWORD from
// ESO's Secret pgsql-creds, in a namespace with Pod Security restricted
// (so with the security context that asks), and a `metrics` sidecar that
// takes no variable.
func referenceWithMetrics(ns string) *appsv1.Deployment {
	d := dbreader(ns, "dbreaderapp", 1)
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = nil // the default 30s, as the reference has it
	app := &d.Spec.Template.Spec.Containers[0]
	app.Image, app.ImagePullPolicy = mirrorImage, corev1.PullAlways
	for _, v := range []struct{ name, key string }{{"USERNAME", "username"}, {"PASSWORD", "password"}} {
		app.Env = append(app.Env, corev1.EnvVar{Name: v.name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "pgsql-creds"}, Key: v.key}}})
	}
	metrics := *app.DeepCopy()
	metrics.Name, metrics.Env = "metrics", nil
	metrics.Command = []string{"/dbreader", "--files="}
	d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, metrics)
	return d
}

// envExecDelivery (TestEnvExecDelivery): kvinject.io/env- through the exec wrapper
// kvinject-exec (the webhook's --env-delivery exec, as on clusters whose
// API server or kubelets drop fileKeyRef). The reference Deployment, with
// no command, runs its image's ENTRYPOINT from the annotation `kvinject
// entrypoint` printed against the mirror registry; every value class
// arrives byte for byte; the app is PID 1 of its container (an image
// without a shell), gets SIGTERM itself and exits 0 with it, and its exit
// status is the container's; an exec liveness probe sees a variable; the
// metrics sidecar gets none; no value is in the pod spec or an event.
func envExecDelivery(t *testing.T) {
	const (
		ns     = "e2e-env-exec"
		secret = "env-exec-values"
	)
	namespace(t, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ctx := context.Background()
	sas := cluster.Client.CoreV1().ServiceAccounts(ns)
	sa, err := sas.Get(ctx, "dbreader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// As manifests/examples/dbreaderapp/serviceaccount.yaml: the image comes
	// from the mirror registry through the credential provider.
	sa.Annotations[spec.SAAnnotationTenantID] = harness.TenantID
	sa.Annotations[spec.SAAnnotationPullSecret] = "https://" + harness.Vault + ".vault.azure.net/secrets/" + harness.MirrorCredentialSecret
	if _, err := sas.Update(ctx, sa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(envValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Admin(ctx, "POST", "/secrets", map[string]string{"vault": harness.Vault, "name": secret, "value": string(b), "contentType": "application/json"}, nil); err != nil {
		t.Fatal(err)
	}
	webhookEnvDelivery(t, spec.DeliveryExec)

	d := referenceWithMetrics(ns)
	key, entry, err := cluster.EntrypointAnnotation(ctx, "secret-reader", mirrorImage)
	if err != nil {
		t.Fatal(err)
	}
	ann := map[string]string{
		spec.AnnotationVault:                  harness.Vault,
		spec.AnnotationEnvPrefix + "USERNAME": harness.DBSecret + "#username",
		spec.AnnotationEnvPrefix + "PASSWORD": harness.DBSecret + "#password",
		key:                                   entry,
	}
	var names []string
	for name := range envValues {
		ann[spec.AnnotationEnvPrefix+name] = secret + "#" + name
		names = append(names, name)
	}
	sort.Strings(names)
	d.Spec.Template.Annotations = ann
	app := &d.Spec.Template.Spec.Containers[0]
	// The other values, as ESO's Secret would have given them, and the app
	// told by its environment to read them.
	for _, name := range names {
		app.Env = append(app.Env, corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "pgsql-creds"}, Key: strings.ToLower(name)}}})
	}
	app.Env = append(app.Env, corev1.EnvVar{Name: "DBREADER_ENV", Value: "USERNAME,PASSWORD," + strings.Join(names, ",")})
	app.LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/dbreader", "--once", "--files=", "--env=PASSWORD"}}},
		PeriodSeconds: 1, FailureThreshold: 1, TimeoutSeconds: 5,
	}
	create(t, d)
	p := waitRunning(t, ns, "dbreaderapp", 1)[0]

	if got := p.Annotations[spec.AnnotationStatusEnv]; got != spec.DeliveryExec {
		t.Fatalf("%s: %q, want %q", spec.AnnotationStatusEnv, got, spec.DeliveryExec)
	}
	wrapped, metrics := p.Spec.Containers[0], p.Spec.Containers[1]
	if len(wrapped.Command) == 0 || wrapped.Command[0] != spec.ExecCommand {
		t.Errorf("the app's command is %q, not the wrapper", wrapped.Command)
	}
	if c := wrapped.LivenessProbe.Exec.Command; len(c) == 0 || c[0] != spec.ExecCommand {
		t.Errorf("the app's liveness probe runs %q, not the wrapper", c)
	}
	// Least privilege: the sidecar declares no variable and gets nothing.
	if metrics.Env != nil || !slices.Equal(metrics.Command, []string{"/dbreader", "--files="}) {
		t.Errorf("the metrics container was changed: command %q, env %+v", metrics.Command, metrics.Env)
	}
	for _, m := range metrics.VolumeMounts {
		if m.Name == spec.SecretsVolumeName || m.Name == spec.BinVolumeName {
			t.Errorf("the metrics container mounts %s", m.Name)
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
	if !strings.Contains(out, "dbreader: pid 1\n") {
		t.Errorf("the app is not its container's PID 1:\n%s", out)
	}
	if m := logs(t, ns, p.Name, "metrics", false); strings.Contains(m, "dbreader: env ") {
		t.Errorf("the metrics container read variables:\n%s", m)
	}

	// The liveness probe, every second, through the wrapper: the container
	// never restarts.
	time.Sleep(5 * time.Second)
	p2, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p2.Status.ContainerStatuses {
		if s.RestartCount != 0 {
			t.Errorf("container %s restarted %d times (liveness probe: PASSWORD not seen?)", s.Name, s.RestartCount)
		}
	}

	// No value in the pod spec or in an event.
	podSpec, err := json.Marshal(p2.Spec)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evJSON, err := json.Marshal(evs)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range want {
		if strings.Contains(string(podSpec), v) {
			t.Errorf("the pod spec holds the value of %s", name)
		}
		if strings.Contains(string(evJSON), v) {
			t.Errorf("an event holds the value of %s", name)
		}
	}

	stopWithSIGTERM(t, ns, p2)
	exitStatusIsTheApps(t, ns, d)
	singleQuoteRefused(t, ns, d)
}

// singleQuoteRefused: a value with a single quote, which the env file
// cannot carry, stops the agent with a line naming the variable and the
// fix, never the value; the app does not start.
func singleQuoteRefused(t *testing.T, ns string, ref *appsv1.Deployment) {
	t.Helper()
	const (
		secret = "env-exec-quote"
		value  = "it's a 'quoted' value"
	)
	planted = append(planted, value)
	b, err := json.Marshal(map[string]string{"QUOTE": value})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Admin(context.Background(), "POST", "/secrets", map[string]string{"vault": harness.Vault, "name": secret, "value": string(b), "contentType": "application/json"}, nil); err != nil {
		t.Fatal(err)
	}
	d := ref.DeepCopy()
	d.Name = "quoted"
	d.Spec.Selector.MatchLabels["app"] = "quoted"
	d.Spec.Template.Labels["app"] = "quoted"
	d.Spec.Template.Annotations = map[string]string{
		spec.AnnotationVault:               harness.Vault,
		spec.AnnotationEnvPrefix + "QUOTE": secret + "#QUOTE",
	}
	for k, v := range ref.Spec.Template.Annotations {
		if strings.HasPrefix(k, spec.AnnotationEntrypointPrefix) {
			d.Spec.Template.Annotations[k] = v
		}
	}
	d.Spec.Template.Spec.Containers = d.Spec.Template.Spec.Containers[:1]
	c := &d.Spec.Template.Spec.Containers[0]
	c.LivenessProbe = nil
	c.Env = []corev1.EnvVar{{Name: "QUOTE", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "pgsql-creds"}, Key: "quote"}}}, {Name: "DBREADER_ENV", Value: "QUOTE"}}
	create(t, d)
	p, msg := failedAgent(t, ns, "quoted")
	for _, want := range []string{"QUOTE", "single quote", "deliver it as a file instead"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the agent's termination message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, value) || strings.Contains(logs(t, ns, p.Name, spec.AgentContainerName, false), value) {
		t.Errorf("the agent's message or log holds the value")
	}
	t.Logf("the agent on a single quote: %s", msg)
}

// stopWithSIGTERM deletes the pod (grace period 30s): the app, not the
// wrapper, gets SIGTERM, says so and exits 0 at once.
func stopWithSIGTERM(t *testing.T, ns string, p *corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods := cluster.Client.CoreV1().Pods(ns)
	stream, err := pods.GetLogs(p.Name, &corev1.PodLogOptions{Container: "secret-reader", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var (
		mu   sync.Mutex
		logs []string
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stream)
		for sc.Scan() {
			mu.Lock()
			logs = append(logs, sc.Text())
			mu.Unlock()
		}
	}()
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + p.Name, ResourceVersion: p.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	t0 := time.Now()
	if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var exit *corev1.ContainerStateTerminated
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			break
		}
		if q, ok := ev.Object.(*corev1.Pod); ok {
			for _, s := range q.Status.ContainerStatuses {
				if s.Name == "secret-reader" && s.State.Terminated != nil {
					exit = s.State.Terminated
				}
			}
		}
	}
	took := time.Since(t0)
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(logs, "dbreader: got terminated, shutting down") {
		t.Errorf("the app did not log SIGTERM:\n%s", strings.Join(logs, "\n"))
	}
	if took > 15*time.Second {
		t.Errorf("the pod took %v to end with a 30s grace period: SIGTERM did not reach the app", took)
	}
	switch {
	case exit == nil:
		t.Logf("the container's last state was not seen before the pod was gone")
	case exit.ExitCode != 0:
		t.Errorf("the app exited %d on SIGTERM, want 0 (%s)", exit.ExitCode, exit.Message)
	}
}

// exitStatusIsTheApps: a pod of the same app that ends (--once), once with
// every variable and once missing one, ends with the app's status: 0, then
// 1 with the app's own line, nothing from the wrapper in the termination
// message.
func exitStatusIsTheApps(t *testing.T, ns string, d *appsv1.Deployment) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		env  string
		code int32
	}{
		{"once-ok", "USERNAME,PASSWORD", 0},
		{"once-missing", "USERNAME,NOT_DECLARED", 1},
	} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: ns, Labels: map[string]string{spec.LabelInject: "true"}, Annotations: map[string]string{}},
			Spec:       *d.Spec.Template.Spec.DeepCopy(),
		}
		for k, v := range d.Spec.Template.Annotations {
			p.Annotations[k] = v
		}
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.Containers = p.Spec.Containers[:1]
		c := &p.Spec.Containers[0]
		c.LivenessProbe = nil
		c.Env = c.Env[:2] // USERNAME, PASSWORD
		c.Args = []string{"--once", "--files=", "--env=" + tc.env}
		// args and no command: the annotation is the ENTRYPOINT alone.
		key, entry, err := cluster.EntrypointAnnotation(ctx, "secret-reader", mirrorImage, "--entrypoint-only")
		if err != nil {
			t.Fatal(err)
		}
		for k := range p.Annotations {
			if strings.HasPrefix(k, spec.AnnotationEnvPrefix) && k != spec.AnnotationEnvPrefix+"USERNAME" && k != spec.AnnotationEnvPrefix+"PASSWORD" {
				delete(p.Annotations, k)
			}
		}
		p.Annotations[key] = entry
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var term *corev1.ContainerStateTerminated
		waitFor(t, 2*time.Minute, "pod "+tc.name+" ended", func() (bool, error) {
			q, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, tc.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, s := range q.Status.ContainerStatuses {
				if s.State.Terminated != nil {
					term = s.State.Terminated
					return true, nil
				}
			}
			return false, fmt.Errorf("%s", describePods([]corev1.Pod{*q}))
		})
		if term.ExitCode != tc.code {
			t.Errorf("%s: the container exited %d, want the app's %d (%s)", tc.name, term.ExitCode, tc.code, term.Message)
		}
		out := logs(t, ns, tc.name, "secret-reader", false)
		if tc.code != 0 && (!strings.Contains(out, "dbreader: env NOT_DECLARED is not set") || strings.Contains(term.Message, "kvinject-exec")) {
			t.Errorf("%s: the status is not the app's: log\n%s\ntermination message %q", tc.name, out, term.Message)
		}
		if tc.code == 0 && !strings.Contains(out, "dbreader: env PASSWORD: ") {
			t.Errorf("%s: the app did not read PASSWORD:\n%s", tc.name, out)
		}
	}
}
