package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
)

func referencePod(extra map[string]string) *corev1.Pod {
	pod := readPodString(`
metadata:
  name: dbreaderapp
  labels: {kvinject.io/inject: "true"}
  annotations:
    kvinject.io/vault: homelab-kv
    kvinject.io/env-PASSWORD: app-pgsql#password
spec:
  serviceAccountName: dbreader
  containers:
  - name: secret-reader
    image: registry.example/dbreader:v1
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: pgsql-creds, key: password}}
  - name: metrics
    image: registry.example/exporter:v1
`)
	for k, v := range extra {
		pod.Annotations[k] = v
	}
	return pod
}

// TestEnvDeliveryChoice: auto takes fileKeyRef only where it cannot be
// dropped; the choice is in kvinject.io/status-env, and the wrapper's in a
// warning.
func TestEnvDeliveryChoice(t *testing.T) {
	t.Parallel()
	entry := map[string]string{"kvinject.io/entrypoint-secret-reader": `["/app/secret-reader"]`}
	for _, tc := range []struct {
		name     string
		delivery string
		version  string
		cluster  *Cluster
		want     string
	}{
		{"auto, 1.37 assumed", spec.DeliveryAuto, "1.37", nil, spec.DeliveryFileKeyRef},
		{"auto, 1.33", spec.DeliveryAuto, "1.33", nil, spec.DeliveryExec},
		{"auto, EnvFiles on, kubelets new", spec.DeliveryAuto, "1.35", &Cluster{EnvFiles: true}, spec.DeliveryFileKeyRef},
		{"auto, EnvFiles off", spec.DeliveryAuto, "1.35", &Cluster{}, spec.DeliveryExec},
		{"auto, an old kubelet", spec.DeliveryAuto, "1.37", &Cluster{EnvFiles: true, OldKubelets: []string{"node-a"}}, spec.DeliveryExec},
		{"exec forced", spec.DeliveryExec, "1.37", &Cluster{EnvFiles: true}, spec.DeliveryExec},
		{"fileKeyRef forced", spec.DeliveryFileKeyRef, "1.35", &Cluster{}, spec.DeliveryFileKeyRef},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t)
			o.EnvDelivery = tc.delivery
			if err := o.SetKubeVersion(tc.version); err != nil {
				t.Fatal(err)
			}
			if tc.cluster != nil {
				o = o.WithCluster(*tc.cluster)
			}
			pod := referencePod(entry)
			if err := Mutate(pod, testSA("group1", "dbreader"), o); err != nil {
				t.Fatal(err)
			}
			if got := pod.Annotations[spec.AnnotationStatusEnv]; got != tc.want {
				t.Errorf("status-env %q, want %q", got, tc.want)
			}
			app, metrics := pod.Spec.Containers[0], pod.Spec.Containers[1]
			if len(app.Env) != 1 || app.Env[0].ValueFrom != nil && app.Env[0].ValueFrom.SecretKeyRef != nil {
				t.Errorf("secret-reader's env still reads the Secret: %+v", app.Env)
			}
			if len(metrics.Env) != 0 || len(metrics.VolumeMounts) != 0 || len(metrics.Command) != 0 {
				t.Errorf("metrics got what it never asked for: %+v", metrics)
			}
			wrapped := len(app.Command) > 0 && app.Command[0] == spec.ExecCommand
			if wrapped != (tc.want == spec.DeliveryExec) {
				t.Errorf("command %q with delivery %s", app.Command, tc.want)
			}
			adm, err := Admit(pod, testSA("group1", "dbreader"), o)
			if err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(strings.Join(adm.Warnings, "\n"), "exec wrapper")
			if warned != (tc.want == spec.DeliveryExec) {
				t.Errorf("warnings %q with delivery %s", adm.Warnings, tc.want)
			}
		})
	}
}

// TestEntrypointDenials: a wrapped container without a command needs its
// entrypoint annotation, which must be a JSON array of strings.
func TestEntrypointDenials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ann  map[string]string
		args []string
		want []string
	}{
		{"missing", nil, nil, []string{"container \"secret-reader\" has no command, so the exec wrapper that delivers its env variables needs kvinject.io/entrypoint-secret-reader (its image's ENTRYPOINT followed by its CMD, a JSON array): the webhook never asks a registry; add it with `kvinject entrypoint --container secret-reader registry.example/dbreader:v1`"}},
		{"missing, with args", nil, []string{"--x"}, []string{"container \"secret-reader\" has no command, so the exec wrapper that delivers its env variables needs kvinject.io/entrypoint-secret-reader (its image's ENTRYPOINT (its args follow), a JSON array): the webhook never asks a registry; add it with `kvinject entrypoint --container secret-reader --entrypoint-only registry.example/dbreader:v1`"}},
		{"not JSON", map[string]string{"kvinject.io/entrypoint-secret-reader": "/app/secret-reader"}, nil, []string{`kvinject.io/entrypoint-secret-reader: must be a JSON array of strings, the program first, like ["/app/secret-reader","--listen=:8080"]; kvinject entrypoint IMAGE prints it`}},
		{"not strings", map[string]string{"kvinject.io/entrypoint-secret-reader": `["/a", 1]`}, nil, []string{`kvinject.io/entrypoint-secret-reader: must be a JSON array of strings, the program first, like ["/app/secret-reader","--listen=:8080"]; kvinject entrypoint IMAGE prints it`}},
		{"empty, no args", map[string]string{"kvinject.io/entrypoint-secret-reader": `[]`}, nil, []string{"kvinject.io/entrypoint-secret-reader: is empty and container \"secret-reader\" has no args, so there is no program to run: give the image's ENTRYPOINT followed by its CMD (`kvinject entrypoint --container secret-reader registry.example/dbreader:v1`)"}},
		{"null", map[string]string{"kvinject.io/entrypoint-secret-reader": `null`}, []string{"--x"}, []string{`kvinject.io/entrypoint-secret-reader: must be a JSON array of strings, the program first, like ["/app/secret-reader","--listen=:8080"]; kvinject entrypoint IMAGE prints it`}},
		{"empty program name", map[string]string{"kvinject.io/entrypoint-secret-reader": `[""]`}, nil, []string{`kvinject.io/entrypoint-secret-reader: must be a JSON array of strings, the program first, like ["/app/secret-reader","--listen=:8080"]; kvinject entrypoint IMAGE prints it`}},
		{"placeholder text", map[string]string{"kvinject.io/entrypoint-secret-reader": `["/a"]`}, []string{"<kvinject-exec:X>"}, []string{`container "secret-reader": its command, args or env hold "<kvinject-exec:", which the exec wrapper reserves: remove it`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t)
			o.EnvDelivery = spec.DeliveryExec
			pod := referencePod(tc.ann)
			pod.Spec.Containers[0].Args = tc.args
			err := Mutate(pod, testSA("group1", "dbreader"), o)
			var d *Denial
			if !errors.As(err, &d) {
				t.Fatalf("Mutate = %v, want a denial", err)
			}
			if diff := cmp.Diff(tc.want, d.Problems); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestEntrypointCases: the four cases of command and args against the
// image's ENTRYPOINT and CMD.
func TestEntrypointCases(t *testing.T) {
	t.Parallel()
	flags := []string{spec.ExecCommand, "--env-file=/var/run/secrets/kvinject/.kvinject-env", "--termination-log=/dev/termination-log", "--env=PASSWORD", "--"}
	for _, tc := range []struct {
		name              string
		command, args     []string
		annotation        string
		wantCmd, wantArgs []string
	}{
		{"neither: ENTRYPOINT and CMD from the annotation", nil, nil, `["/ep","cmd-$1"]`, []string{"/ep", "cmd-$$1"}, nil},
		{"args only: ENTRYPOINT from the annotation, the args follow", nil, []string{"$(PASSWORD)"}, `["/ep"]`, []string{"/ep"}, []string{"$(PASSWORD)"}},
		{"args only, an image with only a CMD: the args are the program", nil, []string{"/bin/app", "-x"}, `[]`, nil, []string{"/bin/app", "-x"}},
		{"command only: the image is not asked", []string{"/bin/app", "$(PASSWORD)"}, nil, "", []string{"/bin/app", "$(PASSWORD)"}, nil},
		{"command and args", []string{"/bin/app"}, []string{"-x"}, "", []string{"/bin/app"}, []string{"-x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t)
			o.EnvDelivery = spec.DeliveryExec
			ann := map[string]string{}
			if tc.annotation != "" {
				ann["kvinject.io/entrypoint-secret-reader"] = tc.annotation
			}
			pod := referencePod(ann)
			c := &pod.Spec.Containers[0]
			c.Command, c.Args = tc.command, tc.args
			before := pod.DeepCopy()
			if err := Mutate(pod, testSA("group1", "dbreader"), o); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(append(flags, tc.wantCmd...), c.Command); diff != "" {
				t.Errorf("command (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantArgs, c.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			checkPatch(t, before, testSA("group1", "dbreader"), o)
		})
	}
}

func readPodString(s string) *corev1.Pod {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(s), &pod); err != nil {
		panic(err)
	}
	return &pod
}
