package webhook

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
)

// onChangePod is podWith's pod with a refresh, the app running as 1000:1000,
// a second container and a sidecar.
func onChangePod(ann map[string]string) *corev1.Pod {
	all := map[string]string{"kvinject.io/refresh": "1m", "kvinject.io/secret-db": "db#password"}
	for k, v := range ann {
		all[k] = v
	}
	for k, v := range all {
		if v == "" {
			delete(all, k)
		}
	}
	pod := podWith(all)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](1000)}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "metrics", Image: "m"})
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: "proxy", Image: "p", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)})
	return pod
}

// TestOnChangeConsumers: what counts as reading the set, per container:
// the files of a target container, the env variables a container gets;
// init containers are done before any refresh, sidecars run beside it.
func TestOnChangeConsumers(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want []spec.Consumer
	}{{
		name: "files in every regular container",
		ann:  map[string]string{"kvinject.io/on-change": "restart"},
		want: []spec.Consumer{{Name: "app", Files: true}, {Name: "metrics", Files: true}},
	}, {
		name: "files in the named containers, a sidecar among them, not the init container",
		ann:  map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/containers": "setup,proxy,app"},
		want: []spec.Consumer{{Name: "proxy", Files: true}, {Name: "app", Files: true}},
	}, {
		name: "env variables only",
		ann: map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/secret-db": "", "kvinject.io/containers": "metrics",
			"kvinject.io/env-PASSWORD": "db#password", "kvinject.io/env-USER": "db#user"},
		want: []spec.Consumer{{Name: "metrics", Env: []string{"PASSWORD", "USER"}}},
	}, {
		name: "files and env variables",
		ann: map[string]string{"kvinject.io/on-change": "signal:SIGHUP", "kvinject.io/containers": "app",
			"kvinject.io/env-PASSWORD": "db#password"},
		want: []spec.Consumer{{Name: "app", Files: true, Env: []string{"PASSWORD"}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := onChangePod(tc.ann)
			checkPatch(t, pod, testSA("ns", "app"), testOptions(t))
			if err := Mutate(pod, testSA("ns", "app"), testOptions(t)); err != nil {
				t.Fatal(err)
			}
			checkInjected(t, pod)
			if diff := cmp.Diff(tc.want, agentSpec(t, pod.Spec.InitContainers[0]).OnChange.Containers); diff != "" {
				t.Errorf("consumers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOnChangeDenials(t *testing.T) {
	const allowed = "restart or signal:<NAME> with NAME one of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH"
	tests := []struct {
		name   string
		ann    map[string]string
		change func(*corev1.Pod)
		want   []string
	}{{
		name: "a bad value",
		ann:  map[string]string{"kvinject.io/on-change": "signal:HUP"},
		want: []string{`kvinject.io/on-change: "signal:HUP" must be ` + allowed + ": did you mean signal:SIGHUP?"},
	}, {
		name: "without refresh",
		ann:  map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/refresh": ""},
		want: []string{"kvinject.io/on-change: needs kvinject.io/refresh: only the refresh sidecar sees a change; add kvinject.io/refresh: 15m (or another interval), or remove kvinject.io/on-change"},
	}, {
		name: "only init containers read",
		ann:  map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/containers": "setup"},
		want: []string{"kvinject.io/on-change: no container that runs beside the refresh sidecar reads the files or the env variables (init containers are done before a refresh): remove the annotation"},
	}, {
		name: "restart, an httpGet liveness probe",
		ann:  map[string]string{"kvinject.io/on-change": "restart"},
		change: func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/"}}}
		},
		want: []string{`kvinject.io/on-change: restart: container "app" has a httpGet liveness probe, which kvinject cannot put its check in front of: use signal:SIGTERM (the app ends on it and its kubelet starts it again), or make the liveness probe an exec probe`},
	}, {
		name: "restart, a grpc liveness probe on a sidecar",
		ann:  map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/containers": "proxy"},
		change: func(p *corev1.Pod) {
			p.Spec.InitContainers[1].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9}}}
		},
		want: []string{`kvinject.io/on-change: restart: container "proxy" has a grpc liveness probe, which kvinject cannot put its check in front of: use signal:SIGTERM (the app ends on it and its kubelet starts it again), or make the liveness probe an exec probe`},
	}, {
		name:   "restart, restartPolicy Never",
		ann:    map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/containers": "app"},
		change: func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever },
		want:   []string{`kvinject.io/on-change: restart: container "app" has restartPolicy Never, so its kubelet would leave it stopped: use signal:<NAME>, or a restartPolicy that restarts it`},
	}, {
		name:   "restart, a container's own restartPolicy Never",
		ann:    map[string]string{"kvinject.io/on-change": "restart", "kvinject.io/containers": "app"},
		change: func(p *corev1.Pod) { p.Spec.Containers[0].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyNever) },
		want:   []string{`kvinject.io/on-change: restart: container "app" has restartPolicy Never, so its kubelet would leave it stopped: use signal:<NAME>, or a restartPolicy that restarts it`},
	}, {
		name: "signal, a container that gets only env variables",
		ann:  map[string]string{"kvinject.io/on-change": "signal:SIGHUP", "kvinject.io/containers": "app", "kvinject.io/env-PASSWORD": "db#password"},
		change: func(p *corev1.Pod) {
			p.Spec.Containers[1].Env = []corev1.EnvVar{{Name: "PASSWORD", Value: "old"}}
		},
		want: []string{`kvinject.io/on-change: signal:SIGHUP: container "metrics" gets only env variables (kvinject.io/env-PASSWORD), and a running process's environment cannot change: a signal cannot give it a new value; use restart, or deliver the values as files`},
	}, {
		name:   "signal, the user not known",
		ann:    map[string]string{"kvinject.io/on-change": "signal:SIGHUP", "kvinject.io/containers": "app"},
		change: func(p *corev1.Pod) { p.Spec.SecurityContext = nil },
		want:   []string{`kvinject.io/on-change: signal:SIGHUP: the refresh sidecar signals as the app's user and group, so container "app" and every other target container must run as one known non-root runAsUser and runAsGroup (securityContext of the pod or the containers)`},
	}, {
		name: "signal, two users",
		ann:  map[string]string{"kvinject.io/on-change": "signal:SIGUSR1"},
		change: func(p *corev1.Pod) {
			p.Spec.Containers[1].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](2000)}
		},
		want: []string{
			`kvinject.io/on-change: signal:SIGUSR1: the refresh sidecar signals as the app's user and group, so container "app" and every other target container must run as one known non-root runAsUser and runAsGroup (securityContext of the pod or the containers)`,
			`kvinject.io/on-change: signal:SIGUSR1: the refresh sidecar signals as the app's user and group, so container "metrics" and every other target container must run as one known non-root runAsUser and runAsGroup (securityContext of the pod or the containers)`,
		},
	}, {
		name:   "signal, hostPID",
		ann:    map[string]string{"kvinject.io/on-change": "signal:SIGHUP", "kvinject.io/containers": "app"},
		change: func(p *corev1.Pod) { p.Spec.HostPID = true },
		want:   []string{"kvinject.io/on-change: signal:SIGHUP needs shareProcessNamespace, which hostPID excludes: remove hostPID, or use restart"},
	}, {
		name:   "signal, shareProcessNamespace false",
		ann:    map[string]string{"kvinject.io/on-change": "signal:SIGHUP", "kvinject.io/containers": "app"},
		change: func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = ptr.To(false) },
		want:   []string{"kvinject.io/on-change: signal:SIGHUP needs shareProcessNamespace, and the pod sets it to false: remove the field (kvinject sets it) or set it to true, or use restart"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := onChangePod(tc.ann)
			if tc.change != nil {
				tc.change(pod)
			}
			before := pod.DeepCopy()
			err := Mutate(pod, testSA("ns", "app"), testOptions(t))
			var d *Denial
			if !errors.As(err, &d) {
				t.Fatalf("Mutate = %v, want a denial", err)
			}
			if diff := cmp.Diff(tc.want, d.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, pod); diff != "" {
				t.Errorf("a denied pod was changed (-before +after):\n%s", diff)
			}
		})
	}
}

// TestCheckCommand: the check goes in front of an exec probe's command,
// once, whatever the exec wrapper did to it.
func TestCheckCommand(t *testing.T) {
	const check = "--check-changed=/var/run/kvinject.io/on-change/changed"
	w := spec.ExecCommand
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"no probe", nil, []string{w, check}},
		{"the check alone", []string{w, check}, []string{w, check}},
		{"a probe", []string{"/app", "--healthy"}, []string{w, check, "--", "/app", "--healthy"}},
		{"a probe with the check", []string{w, check, "--", "/app", "--healthy"}, []string{w, check, "--", "/app", "--healthy"}},
		{"a probe the exec wrapper wrapped", []string{w, "--env-file=/e", "--env=A", "--probe", "--", "/app"},
			[]string{w, check, "--env-file=/e", "--env=A", "--probe", "--", "/app"}},
		{"a wrapped probe with the check", []string{w, check, "--env-file=/e", "--env=A", "--probe", "--", "/app"},
			[]string{w, check, "--env-file=/e", "--env=A", "--probe", "--", "/app"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, checkCommand(tc.in)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestOnChangeWarning: the pod's creator hears what sharing the process
// namespace exposes, when kvinject is the one to share it.
func TestOnChangeWarning(t *testing.T) {
	o := testOptions(t)
	want := "kvinject.io/on-change: signal:SIGHUP sets shareProcessNamespace: true, so that the kvinject-refresh sidecar can signal the app: every container of the pod sees the others' processes and command lines, a container running as the same user can read their environment (env variables included) and files through /proc and signal them, and the app is no longer PID 1 (a signal it does not handle ends it)"
	warnings := func(pod *corev1.Pod) []string {
		t.Helper()
		adm, err := Admit(pod, testSA("ns", "app"), o)
		if err != nil {
			t.Fatal(err)
		}
		return adm.Warnings
	}
	pod := onChangePod(map[string]string{"kvinject.io/on-change": "signal:SIGHUP"})
	if diff := cmp.Diff([]string{want}, warnings(pod)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	pod.Spec.ShareProcessNamespace = ptr.To(true)
	if ws := warnings(pod); len(ws) != 0 {
		t.Errorf("warnings %q for a pod that shares its process namespace already", ws)
	}
	if ws := warnings(onChangePod(map[string]string{"kvinject.io/on-change": "restart"})); len(ws) != 0 {
		t.Errorf("warnings %q for restart", ws)
	}
}
