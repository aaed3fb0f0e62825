package webhook

import (
	"encoding/json"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/spec"
)

// Cluster is what the webhook has learned of the cluster that decides the
// auto delivery of env variables. The lookups (internal/webhookserver)
// produce it; the mutation only reads it.
type Cluster struct {
	// EnvFiles: the API server keeps env[].valueFrom.fileKeyRef (its
	// EnvFiles gate is on).
	EnvFiles bool
	// OldKubelets are the Nodes whose kubelet is older than 1.35 and would
	// ignore fileKeyRef.
	OldKubelets []string
}

// fileKeyRefSafe: fileKeyRef cannot be dropped, by the API server or a kubelet.
func (c Cluster) fileKeyRefSafe() bool { return c.EnvFiles && len(c.OldKubelets) == 0 }

// ClusterOfVersion is what a cluster of Kubernetes version v is taken to be
// without looking (kvinject inject): EnvFiles on from 1.35, and kubelets of
// the same version.
func ClusterOfVersion(minor int) Cluster { return Cluster{EnvFiles: minor >= spec.MinEnvFilesMinor} }

// envDelivery is how this pod's env variables are delivered.
func (o *Options) envDelivery() string {
	switch o.EnvDelivery {
	case spec.DeliveryFileKeyRef, spec.DeliveryExec:
		return o.EnvDelivery
	}
	c := ClusterOfVersion(o.kubeMinor)
	if o.Cluster != nil {
		c = *o.Cluster
	}
	if c.fileKeyRefSafe() {
		return spec.DeliveryFileKeyRef
	}
	return spec.DeliveryExec
}

// binVolume holds the exec wrapper: memory-backed like the secrets, so
// that nothing is written to the node's disk and no node mounts it noexec
// (kubelet's tmpfs has no noexec); the wrapper's ~2 MB count towards the
// pod's memory.
func binVolume() corev1.Volume {
	limit := resource.MustParse("8Mi")
	return corev1.Volume{Name: spec.BinVolumeName, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &limit},
	}}
}

// envReceivers returns, for each variable, the containers that get it: the
// containers (and init containers) that already declare it, else the
// target containers.
func envReceivers(pod *corev1.Pod, names []string, targets map[string]bool) map[string][]string {
	out := map[string][]string{}
	for _, n := range names {
		for c := range allContainers(pod) {
			if !contains(ownContainers, c.Name) && indexOf(c.Env, n, envName) >= 0 {
				out[c.Name] = append(out[c.Name], n)
			}
		}
	}
	for _, n := range names {
		declared := false
		for _, vs := range out {
			declared = declared || slices.Contains(vs, n)
		}
		if declared {
			continue
		}
		for c := range allContainers(pod) {
			if targets[c.Name] {
				out[c.Name] = append(out[c.Name], n)
			}
		}
	}
	return out
}

// wrappedCommand is the container's command run through the wrapper: the
// wrapper, its flags and the original program. A container already
// wrapped keeps its original program; one without a command takes it from
// its entrypoint annotation, escaped, since the kubelet expands what the
// image's ENTRYPOINT and CMD never had expanded.
func wrappedCommand(pod *corev1.Pod, c *corev1.Container, cfg execwrap.Config, d *Denial) []string {
	flags := cfg.Flags(true)
	if orig, ok := unwrap(c.Command); ok {
		return append(append([]string{spec.ExecCommand}, flags...), orig...)
	}
	if len(c.Command) > 0 {
		return append(append([]string{spec.ExecCommand}, flags...), c.Command...)
	}
	key := spec.AnnotationEntrypointPrefix + c.Name
	v, ok := pod.Annotations[key]
	if !ok {
		cmd := "kvinject entrypoint --container " + c.Name
		what := "its image's ENTRYPOINT followed by its CMD"
		if len(c.Args) > 0 {
			cmd += " --entrypoint-only"
			what = "its image's ENTRYPOINT (its args follow)"
		}
		d.addf("container %s has no command, so the exec wrapper that delivers its env variables needs %s: the webhook never asks a registry; add it with `%s %s`",
			spec.Quote(c.Name), key+" ("+what+", a JSON array)", cmd, c.Image)
		return nil
	}
	ep, err := parseEntrypoint(v)
	if err != nil {
		return nil // denied by parse
	}
	if len(ep) == 0 && len(c.Args) == 0 {
		// An image with only a CMD has an empty ENTRYPOINT: that is the whole
		// program only for a container whose args replace the CMD.
		d.addf("%s: is empty and container %s has no args, so there is no program to run: give the image's ENTRYPOINT followed by its CMD (`kvinject entrypoint --container %s %s`)",
			key, spec.Quote(c.Name), c.Name, c.Image)
		return nil
	}
	out := append([]string{spec.ExecCommand}, flags...)
	for _, a := range ep {
		out = append(out, execwrap.EscapeDollar(a))
	}
	return out
}

// parseEntrypoint reads an entrypoint annotation: a JSON array of strings
// whose first, if any, names the program. It is empty only for an image with
// no ENTRYPOINT whose container's args are the whole program.
func parseEntrypoint(v string) ([]string, error) {
	var ep []string
	if err := json.Unmarshal([]byte(v), &ep); err != nil || ep == nil || (len(ep) > 0 && ep[0] == "") {
		return nil, errEntrypoint
	}
	return ep, nil
}

type entrypointError struct{}

func (entrypointError) Error() string {
	return `must be a JSON array of strings, the program first, like ["/app/secret-reader","--listen=:8080"]; kvinject entrypoint IMAGE prints it`
}

var errEntrypoint error = entrypointError{}

// unwrap returns the original program of a command the wrapper already runs.
func unwrap(cmd []string) ([]string, bool) {
	if len(cmd) == 0 || cmd[0] != spec.ExecCommand {
		return nil, false
	}
	_, program, ok := execwrap.SplitFlags(cmd[1:])
	if !ok && slices.ContainsFunc(cmd[1:], execwrap.IsCheckChangedFlag) {
		return nil, true // kvinject.io/on-change's check alone: no program
	}
	return program, ok
}

// wrapHandler wraps an exec probe's or lifecycle hook's command, which the
// kubelet runs in the container but not through its command.
func wrapHandler(exec *corev1.ExecAction, cfg execwrap.Config, expanded bool) []string {
	if exec == nil || len(exec.Command) == 0 {
		return nil
	}
	orig, ok := unwrap(exec.Command)
	if !ok {
		orig = exec.Command
	}
	if ok && len(orig) == 0 {
		return nil // kvinject.io/on-change's check alone, which needs no variable
	}
	return append(append([]string{spec.ExecCommand}, cfg.Flags(expanded)...), orig...)
}

// execConfig is what the wrapper is told in container c.
func execConfig(c *corev1.Container, mountPath string, names []string) execwrap.Config {
	tl := c.TerminationMessagePath
	if tl == "" {
		tl = corev1.TerminationMessagePathDefault
	}
	return execwrap.Config{EnvFile: path.Join(mountPath, spec.EnvFileName), Names: names, TerminationLog: tl}
}

// placeholderProblems denies a container whose own text holds what the
// wrapper would take for a placeholder.
func placeholderProblems(c *corev1.Container, d *Denial) {
	texts := slices.Concat(c.Command, c.Args)
	for _, e := range c.Env {
		if e.Value != execwrap.Placeholder(e.Name) { // kvinject's own, on an injected pod
			texts = append(texts, e.Value)
		}
	}
	for _, t := range texts {
		if execwrap.HasPlaceholder(t) {
			d.addf("container %s: its command, args or env hold %s, which the exec wrapper reserves: remove it", spec.Quote(c.Name), spec.Quote(execwrap.PlaceholderPrefix))
			return
		}
	}
}

// envEntry is the env entry a container gets for variable name.
func envEntry(name, delivery string) corev1.EnvVar {
	if delivery == spec.DeliveryExec {
		return corev1.EnvVar{Name: name, Value: execwrap.Placeholder(name)}
	}
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FileKeyRef: &corev1.FileKeySelector{
		VolumeName: spec.SecretsVolumeName, Path: spec.EnvFileName, Key: name, Optional: ptr.To(false),
	}}}
}

// handlerPaths are the exec handlers of a container the wrapper wraps, by
// their JSON pointer below the container: probes, which the kubelet
// expands with static env values, and lifecycle hooks, which it does not
// expand.
var handlerPaths = []struct {
	ptr      string
	expanded bool
	get      func(*corev1.Container) *corev1.ExecAction
}{
	{"/livenessProbe/exec/command", true, func(c *corev1.Container) *corev1.ExecAction { return probeExec(c.LivenessProbe) }},
	{"/readinessProbe/exec/command", true, func(c *corev1.Container) *corev1.ExecAction { return probeExec(c.ReadinessProbe) }},
	{"/startupProbe/exec/command", true, func(c *corev1.Container) *corev1.ExecAction { return probeExec(c.StartupProbe) }},
	{"/lifecycle/postStart/exec/command", false, func(c *corev1.Container) *corev1.ExecAction { return hookExec(c.Lifecycle, true) }},
	{"/lifecycle/preStop/exec/command", false, func(c *corev1.Container) *corev1.ExecAction { return hookExec(c.Lifecycle, false) }},
}

func probeExec(p *corev1.Probe) *corev1.ExecAction {
	if p == nil {
		return nil
	}
	return p.Exec
}

func hookExec(l *corev1.Lifecycle, postStart bool) *corev1.ExecAction {
	if l == nil {
		return nil
	}
	h := l.PreStop
	if postStart {
		h = l.PostStart
	}
	if h == nil {
		return nil
	}
	return h.Exec
}

// commandEdit sets the command at ptr below a container ("/command" or
// one of handlerPaths).
type commandEdit struct {
	ptr   string
	value []string
}

func (e commandEdit) apply(c *corev1.Container) {
	if e.ptr == "/command" {
		c.Command = e.value
		return
	}
	for _, h := range handlerPaths {
		if h.ptr == e.ptr {
			h.get(c).Command = e.value
		}
	}
}

func (e commandEdit) current(c *corev1.Container) []string {
	if e.ptr == "/command" {
		return c.Command
	}
	for _, h := range handlerPaths {
		if h.ptr == e.ptr {
			return h.get(c).Command
		}
	}
	return nil
}

// wrapEdits are the command edits that run container c through the wrapper.
func wrapEdits(pod *corev1.Pod, c *corev1.Container, cfg execwrap.Config, d *Denial) []commandEdit {
	edits := []commandEdit{{ptr: "/command", value: wrappedCommand(pod, c, cfg, d)}}
	for _, h := range handlerPaths {
		hc := cfg
		hc.TerminationLog = "" // a probe's or hook's failure is its own result, not the container's
		hc.Probe = h.expanded
		if v := wrapHandler(h.get(c), hc, h.expanded); v != nil {
			edits = append(edits, commandEdit{ptr: h.ptr, value: v})
		}
	}
	return edits
}

// entrypointAnnotations checks every entrypoint annotation's value.
func entrypointAnnotations(ann map[string]string, d *Denial) {
	for _, k := range sortedKeys(ann) {
		if strings.HasPrefix(k, spec.AnnotationEntrypointPrefix) {
			if _, err := parseEntrypoint(ann[k]); err != nil {
				d.addf("%s: %v", k, err)
			}
		}
	}
}
