package webhook

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/spec"
)

// The liveness probe kvinject.io/on-change: restart adds to a container that
// has none. The check fails the same way every time once a change is
// newer than the container, so two failures in a row are enough; the
// timeout leaves room for a busy node, where an exec probe can be slow.
const (
	checkPeriodSeconds    = 10
	checkFailureThreshold = 2
	checkTimeoutSeconds   = 5
)

// checkChangedPath is the change marker a target container's liveness
// check reads, in its own directory of the on-change volume.
const checkChangedPath = spec.OnChangeMountPath + "/" + spec.OnChangeChangedFile

// onChangePlan is what kvinject.io/on-change adds to a pod, beside the spec.
type onChangePlan struct {
	// mounts go into each consumer, by name.
	mounts map[string][]corev1.VolumeMount
	// probes are the liveness probes of consumers that have none (restart).
	probes map[string]*corev1.Probe
	// checkEdits put the check in front of a consumer's own exec liveness
	// probe (restart).
	checkEdits map[string]commandEdit
	// shareProcessNamespace: the sidecar must see the consumers' processes
	// (signal).
	shareProcessNamespace bool
}

// planOnChange reads spec.AnnotationOnChange: which containers read what,
// and what each needs for the action. It runs after the files, the env
// variables and the exec wrapper's edits are planned.
func planOnChange(pod *corev1.Pod, in *injection, d *Denial) {
	v, ok := pod.Annotations[spec.AnnotationOnChange]
	if !ok {
		return
	}
	action, signal, err := spec.ParseOnChange(v)
	if err != nil {
		d.addf("%s: %v", spec.AnnotationOnChange, err)
		return
	}
	if _, ok := pod.Annotations[spec.AnnotationRefresh]; !ok {
		d.addf("%s: needs %s: only the refresh sidecar sees a change; add %s: 15m (or another interval), or remove %s",
			spec.AnnotationOnChange, spec.AnnotationRefresh, spec.AnnotationRefresh, spec.AnnotationOnChange)
		return
	}
	consumers, containers := onChangeConsumers(pod, in)
	if len(consumers) == 0 {
		d.addf("%s: no container that runs beside the refresh sidecar reads the files or the env variables (init containers are done before a refresh): remove the annotation",
			spec.AnnotationOnChange)
		return
	}
	plan := &onChangePlan{mounts: map[string][]corev1.VolumeMount{}, probes: map[string]*corev1.Probe{}, checkEdits: map[string]commandEdit{}}
	for i, c := range containers {
		m := []corev1.VolumeMount{{Name: spec.OnChangeVolumeName, MountPath: spec.OnChangeMountPath, SubPath: c.Name, ReadOnly: true}}
		if action == spec.OnChangeRestart {
			m = append(m, corev1.VolumeMount{Name: spec.BinVolumeName, MountPath: spec.BinMountPath, ReadOnly: true})
			planRestart(pod, in, c, plan, d)
		} else {
			planSignal(pod, in, c, consumers[i], v, d)
		}
		plan.mounts[c.Name] = m
	}
	if action == spec.OnChangeSignal {
		plan.shareProcessNamespace = true
		if pod.Spec.HostPID {
			d.addf("%s: %s needs shareProcessNamespace, which hostPID excludes: remove hostPID, or use %s", spec.AnnotationOnChange, v, spec.OnChangeRestart)
		}
		if p := pod.Spec.ShareProcessNamespace; p != nil && !*p {
			// kvinject never rewrites what the pod says.
			d.addf("%s: %s needs shareProcessNamespace, and the pod sets it to false: remove the field (kvinject sets it) or set it to true, or use %s",
				spec.AnnotationOnChange, v, spec.OnChangeRestart)
		}
	}
	in.spec.OnChange = &spec.OnChange{Action: action, Signal: signal, Containers: consumers}
	in.onChange = plan
}

// onChangeConsumers are the containers a change can reach, with what each
// reads: the regular containers and the sidecars (init containers with
// restartPolicy Always) that mount the files or get env variables.
func onChangeConsumers(pod *corev1.Pod, in *injection) ([]spec.Consumer, []*corev1.Container) {
	var consumers []spec.Consumer
	var containers []*corev1.Container
	for c := range allContainers(pod) {
		if contains(ownContainers, c.Name) || !runsBesideRefresh(pod, c) {
			continue
		}
		cs := spec.Consumer{Name: c.Name, Files: len(in.spec.Files) > 0 && in.targets[c.Name], Env: slices.Clone(in.envTo[c.Name])}
		if cs.Files || len(cs.Env) > 0 {
			consumers = append(consumers, cs)
			containers = append(containers, c)
		}
	}
	return consumers, containers
}

// runsBesideRefresh: a regular container, or a sidecar.
func runsBesideRefresh(pod *corev1.Pod, c *corev1.Container) bool {
	if isInitContainer(pod, c) {
		return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}
	return true
}

// isInitContainer says whether c, one of the pod's containers as
// allContainers yields them, is an init container.
func isInitContainer(pod *corev1.Pod, c *corev1.Container) bool {
	for i := range pod.Spec.InitContainers {
		if &pod.Spec.InitContainers[i] == c {
			return true
		}
	}
	return false
}

// planRestart gives container c the liveness check: a probe of its own, or
// the check in front of its exec liveness probe, timings kept.
func planRestart(pod *corev1.Pod, in *injection, c *corev1.Container, plan *onChangePlan, d *Denial) {
	if restartPolicy(pod, c) == corev1.ContainerRestartPolicyNever {
		d.addf("%s: restart: container %s has restartPolicy Never, so its kubelet would leave it stopped: use signal:<NAME>, or a restartPolicy that restarts it",
			spec.AnnotationOnChange, spec.Quote(c.Name))
		return
	}
	p := c.LivenessProbe
	switch {
	case p == nil:
		plan.probes[c.Name] = checkProbe()
	case p.Exec != nil && len(p.Exec.Command) > 0:
		// The exec wrapper may have wrapped the probe already: the check
		// goes in front of its flags.
		for i, e := range in.edits[c.Name] {
			if e.ptr == livenessCommandPtr {
				in.edits[c.Name][i].value = checkCommand(e.value)
				return
			}
		}
		plan.checkEdits[c.Name] = commandEdit{ptr: livenessCommandPtr, value: checkCommand(p.Exec.Command)}
	default:
		d.addf("%s: restart: container %s has a %s liveness probe, which kvinject cannot put its check in front of: use %s (the app ends on it and its kubelet starts it again), or make the liveness probe an exec probe",
			spec.AnnotationOnChange, spec.Quote(c.Name), probeKind(p), spec.OnChangeSignalPrefix+"SIGTERM")
	}
}

// planSignal checks that the sidecar can signal container c: a signal
// cannot change an environment, and the sidecar signals as the app's user
// and group (the kernel lets a process see another's filesystem only then).
func planSignal(pod *corev1.Pod, in *injection, c *corev1.Container, cs spec.Consumer, v string, d *Denial) {
	if !cs.Files {
		d.addf("%s: %s: container %s gets only env variables (%s), and a running process's environment cannot change: a signal cannot give it a new value; use %s, or deliver the values as files",
			spec.AnnotationOnChange, v, spec.Quote(c.Name), spec.AnnotationEnvPrefix+cs.Env[0], spec.OnChangeRestart)
		return
	}
	uid, gid := containerUser(pod, c)
	if uid == nil || gid == nil || *uid == 0 || in.agentUser == nil || in.agentGroup == nil || *uid != *in.agentUser || *gid != *in.agentGroup {
		d.addf("%s: %s: the refresh sidecar signals as the app's user and group, so container %s and every other target container must run as one known non-root runAsUser and runAsGroup (securityContext of the pod or the containers)",
			spec.AnnotationOnChange, v, spec.Quote(c.Name))
	}
}

// restartPolicy is what the kubelet does when container c (a consumer:
// a regular container or a sidecar) ends: a sidecar always restarts; a
// regular container follows its own restartPolicy, else the pod's.
func restartPolicy(pod *corev1.Pod, c *corev1.Container) corev1.ContainerRestartPolicy {
	if isInitContainer(pod, c) {
		return corev1.ContainerRestartPolicyAlways
	}
	if c.RestartPolicy != nil {
		return *c.RestartPolicy
	}
	if pod.Spec.RestartPolicy == "" {
		return corev1.ContainerRestartPolicyAlways
	}
	return corev1.ContainerRestartPolicy(pod.Spec.RestartPolicy)
}

func probeKind(p *corev1.Probe) string {
	switch {
	case p.HTTPGet != nil:
		return "httpGet"
	case p.TCPSocket != nil:
		return "tcpSocket"
	case p.GRPC != nil:
		return "grpc"
	}
	return "non-exec"
}

const livenessCommandPtr = "/livenessProbe/exec/command"

// checkProbe is the liveness probe of a container that has none: the check
// alone, every field the API server would default set.
func checkProbe() *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: checkCommand(nil)}},
		TimeoutSeconds:   checkTimeoutSeconds,
		PeriodSeconds:    checkPeriodSeconds,
		SuccessThreshold: 1,
		FailureThreshold: checkFailureThreshold,
	}
}

// checkCommand is an exec probe's command with the check in front: the
// wrapper with the check's flag, then the wrapper's other flags and the
// probe's own program after "--", if any. It is the same for a command it
// made: mutating again changes nothing.
func checkCommand(cmd []string) []string {
	out := []string{spec.ExecCommand, execwrap.CheckChangedFlag(checkChangedPath)}
	if len(cmd) == 0 {
		return out
	}
	if cmd[0] != spec.ExecCommand {
		return append(append(out, "--"), cmd...)
	}
	flags, program, ok := execwrap.SplitFlags(cmd[1:])
	if !ok {
		return out // the check alone
	}
	for _, f := range flags {
		if !execwrap.IsCheckChangedFlag(f) {
			out = append(out, f)
		}
	}
	return append(append(out, "--"), program...)
}

// onChangeVolume holds one small directory per target container.
func onChangeVolume() corev1.Volume {
	limit := resource.MustParse("1Mi")
	return corev1.Volume{Name: spec.OnChangeVolumeName, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &limit},
	}}
}

// onChangeWarning is the admission warning of a pod whose process namespace
// kvinject.io/on-change: signal:<NAME> shares; oc is what the annotation
// parsed to (nil: none).
func onChangeWarning(pod *corev1.Pod, oc *spec.OnChange) string {
	if oc == nil || oc.Action != spec.OnChangeSignal || ptr.Deref(pod.Spec.ShareProcessNamespace, false) {
		return ""
	}
	v := spec.FormatOnChange(oc.Action, oc.Signal)
	return fmt.Sprintf("%s: %s sets shareProcessNamespace: true, so that the kvinject-refresh sidecar can signal the app: every container of the pod sees the others' processes and command lines, a container running as the same user can read their environment (env variables included) and files through /proc and signal them, and the app is no longer PID 1 (a signal it does not handle ends it)",
		spec.AnnotationOnChange, v)
}
