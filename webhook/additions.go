package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"
)

// additions is everything kvinject puts into one pod, computed from the pod
// before it changes. apply writes it into the typed pod (Mutate); patch turns
// it into JSON patch operations against the pod as the API server sent it
// (Patch). Both upsert by name, so that an injected pod takes no change, and
// both touch only what kvinject owns: its annotation, its volumes, its init
// containers, and its mounts in the target containers. Every array index in
// the webhook is computed in this file.
type additions struct {
	annotations map[string]string
	volumes     []corev1.Volume
	// initContainers are kvinject's own, placed first, in this order.
	initContainers []corev1.Container
	// mounts go into every target container (regular or init) by name.
	mounts  []corev1.VolumeMount
	targets map[string]bool
	// env goes into the containers it names; an env entry of the same
	// name is replaced in place. wrapMounts go into every container with
	// edits: the commands the exec wrapper takes over.
	env        map[string][]corev1.EnvVar
	wrapMounts []corev1.VolumeMount
	edits      map[string][]commandEdit
	// kvinject.io/on-change: extraMounts go into the containers they name;
	// probes are liveness probes for containers that have none; checkEdits
	// set a container's liveness probe command; shareProcessNamespace is set
	// on the pod.
	extraMounts           map[string][]corev1.VolumeMount
	probes                map[string]*corev1.Probe
	checkEdits            map[string]commandEdit
	shareProcessNamespace bool
}

// touches says whether container name gets anything.
func (a *additions) touches(name string) bool {
	_, check := a.checkEdits[name]
	return a.targets[name] || len(a.env[name]) > 0 || len(a.edits[name]) > 0 || len(a.extraMounts[name]) > 0 || a.probes[name] != nil || check
}

// mountsFor are the mounts container name gets, each volume once.
func (a *additions) mountsFor(name string) []corev1.VolumeMount {
	var ms []corev1.VolumeMount
	if a.targets[name] {
		ms = append(ms, a.mounts...)
	}
	var more []corev1.VolumeMount
	if len(a.edits[name]) > 0 {
		more = a.wrapMounts
	}
	for _, m := range slices.Concat(more, a.extraMounts[name]) {
		if indexOf(ms, m.Name, mountName) < 0 {
			ms = append(ms, m)
		}
	}
	return ms
}

// apply writes the additions into pod.
func (a *additions) apply(pod *corev1.Pod) {
	if pod.Annotations == nil {
		pod.Annotations = make(map[string]string, len(a.annotations))
	}
	for _, k := range sortedKeys(a.annotations) {
		pod.Annotations[k] = a.annotations[k]
	}
	for _, v := range a.volumes {
		upsertVolume(&pod.Spec.Volumes, v)
	}
	if a.shareProcessNamespace {
		pod.Spec.ShareProcessNamespace = ptr.To(true)
	}
	for i := range pod.Spec.InitContainers {
		if !a.ownsInitContainer(pod.Spec.InitContainers[i].Name) {
			a.applyMounts(&pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		a.applyMounts(&pod.Spec.Containers[i])
	}
	inits := make([]corev1.Container, 0, len(pod.Spec.InitContainers)+len(a.initContainers))
	inits = append(inits, a.initContainers...)
	for _, c := range pod.Spec.InitContainers {
		if !a.ownsInitContainer(c.Name) {
			inits = append(inits, c)
		}
	}
	pod.Spec.InitContainers = inits
}

func (a *additions) applyMounts(c *corev1.Container) {
	if !a.touches(c.Name) {
		return
	}
	for _, m := range a.mountsFor(c.Name) {
		upsertMount(&c.VolumeMounts, m)
	}
	for _, e := range a.env[c.Name] {
		if i := indexOf(c.Env, e.Name, envName); i >= 0 {
			c.Env[i] = e
		} else {
			c.Env = append(c.Env, e)
		}
	}
	for _, e := range a.edits[c.Name] {
		e.apply(c)
	}
	if p := a.probes[c.Name]; p != nil && c.LivenessProbe == nil {
		c.LivenessProbe = p.DeepCopy()
	}
	if e, ok := a.checkEdits[c.Name]; ok {
		e.apply(c)
	}
}

func (a *additions) ownsInitContainer(name string) bool {
	for _, c := range a.initContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// patch returns the JSON patch operations that make pod's raw form hold the
// additions, and nothing else: a field kvinject does not own is never
// replaced or removed, so fields this build of the API types does not know
// survive. Indexes are those of the raw arrays, which decoding preserves.
// Operations apply in order; mounts into existing init containers come
// before kvinject's init containers are placed, so their indexes hold.
func (a *additions) patch(pod *corev1.Pod) []jsonpatch.Operation {
	var ops []jsonpatch.Operation
	ops = append(ops, a.annotationOps(pod.Annotations)...)
	ops = append(ops, upsertOps("/spec/volumes", pod.Spec.Volumes, a.volumes, volumeName)...)
	if a.shareProcessNamespace && !ptr.Deref(pod.Spec.ShareProcessNamespace, false) {
		ops = append(ops, add("/spec/shareProcessNamespace", true))
	}
	for i, c := range pod.Spec.InitContainers {
		if a.touches(c.Name) && !a.ownsInitContainer(c.Name) {
			ops = append(ops, a.targetOps(containerPath("initContainers", i), &c)...)
		}
	}
	for i, c := range pod.Spec.Containers {
		if a.touches(c.Name) {
			ops = append(ops, a.targetOps(containerPath("containers", i), &c)...)
		}
	}
	return append(ops, prefixOps("/spec/initContainers", pod.Spec.InitContainers, a.initContainers)...)
}

// targetOps puts the mounts, env and wrapped commands into the container
// at path. A command is kvinject's once wrapped: it is set whole.
func (a *additions) targetOps(path string, c *corev1.Container) []jsonpatch.Operation {
	ops := upsertOps(path+"/volumeMounts", c.VolumeMounts, a.mountsFor(c.Name), mountName)
	ops = append(ops, upsertOps(path+"/env", c.Env, a.env[c.Name], envName)...)
	for _, e := range a.edits[c.Name] {
		if !slices.Equal(e.current(c), e.value) {
			ops = append(ops, add(path+e.ptr, e.value))
		}
	}
	if p := a.probes[c.Name]; p != nil && c.LivenessProbe == nil {
		ops = append(ops, add(path+"/livenessProbe", p))
	}
	if e, ok := a.checkEdits[c.Name]; ok && !slices.Equal(e.current(c), e.value) {
		ops = append(ops, add(path+e.ptr, e.value))
	}
	return ops
}

func (a *additions) annotationOps(have map[string]string) []jsonpatch.Operation {
	if have == nil {
		return []jsonpatch.Operation{add("/metadata/annotations", a.annotations)}
	}
	var ops []jsonpatch.Operation
	for _, k := range sortedKeys(a.annotations) {
		if v, ok := have[k]; !ok || v != a.annotations[k] {
			// add replaces an existing member: one operation either way.
			ops = append(ops, add("/metadata/annotations/"+escapePointer(k), a.annotations[k]))
		}
	}
	return ops
}

// upsertOps makes the array at path hold every element of want, each in
// place of the first element of the same name or appended. A nil array
// (absent or null in the raw object) is added whole.
func upsertOps[T any](path string, have, want []T, name func(*T) string) []jsonpatch.Operation {
	if have == nil {
		if len(want) == 0 {
			return nil
		}
		return []jsonpatch.Operation{add(path, want)}
	}
	var ops []jsonpatch.Operation
	for i := range want {
		j := indexOf(have, name(&want[i]), name)
		switch {
		case j < 0:
			ops = append(ops, add(path+"/-", want[i]))
		case !equality.Semantic.DeepEqual(have[j], want[i]):
			ops = append(ops, jsonpatch.Operation{Operation: "replace", Path: path + "/" + strconv.Itoa(j), Value: want[i]})
		}
	}
	return ops
}

// prefixOps makes the init containers at path start with own, in order, and
// hold no other container of those names, keeping every other container and
// its order. An own container already in its place and equal is left alone.
func prefixOps(path string, have, own []corev1.Container) []jsonpatch.Operation {
	if have == nil {
		if len(own) == 0 {
			return nil
		}
		return []jsonpatch.Operation{add(path, own)}
	}
	// cur mirrors the raw array as the operations so far leave it.
	cur := make([]*corev1.Container, len(have))
	for i := range have {
		cur[i] = &have[i]
	}
	var ops []jsonpatch.Operation
	for k := range own {
		want := &own[k]
		if k < len(cur) && cur[k].Name == want.Name && count(cur, want.Name) == 1 {
			if !equality.Semantic.DeepEqual(*cur[k], *want) {
				ops = append(ops, jsonpatch.Operation{Operation: "replace", Path: path + "/" + strconv.Itoa(k), Value: *want})
				cur[k] = want
			}
			continue
		}
		for j := len(cur) - 1; j >= 0; j-- {
			if cur[j].Name == want.Name {
				ops = append(ops, jsonpatch.Operation{Operation: "remove", Path: path + "/" + strconv.Itoa(j)})
				cur = append(cur[:j], cur[j+1:]...)
			}
		}
		ops = append(ops, add(path+"/"+strconv.Itoa(k), *want))
		cur = append(cur[:k], append([]*corev1.Container{want}, cur[k:]...)...)
	}
	return ops
}

func add(path string, value any) jsonpatch.Operation {
	return jsonpatch.Operation{Operation: "add", Path: path, Value: value}
}

func containerPath(list string, i int) string {
	return "/spec/" + list + "/" + strconv.Itoa(i)
}

func indexOf[T any](list []T, n string, name func(*T) string) int {
	for i := range list {
		if name(&list[i]) == n {
			return i
		}
	}
	return -1
}

func count(list []*corev1.Container, name string) int {
	n := 0
	for _, c := range list {
		if c.Name == name {
			n++
		}
	}
	return n
}

func volumeName(v *corev1.Volume) string     { return v.Name }
func mountName(m *corev1.VolumeMount) string { return m.Name }
func envName(e *corev1.EnvVar) string        { return e.Name }

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return pointerEscaper.Replace(s)
}

// EncodePatch writes operations as a JSON patch document. It writes each
// value once; json.Marshal of the operations would encode every value and
// then scan it again (jsonpatch.Operation has its own MarshalJSON).
func EncodePatch(ops []jsonpatch.Operation) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, 4096))
	buf.WriteByte('[')
	for i, op := range ops {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"op":`)
		writeJSONString(buf, op.Operation)
		buf.WriteString(`,"path":`)
		writeJSONString(buf, op.Path)
		if op.Operation != "remove" {
			value, err := json.Marshal(op.Value)
			if err != nil {
				return nil, fmt.Errorf("encode the value at %s: %w", op.Path, err)
			}
			buf.WriteString(`,"value":`)
			buf.Write(value)
		}
		buf.WriteByte('}')
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always encodes
	buf.Write(b)
}

// upsertVolume replaces the volume of the same name or appends it.
func upsertVolume(vs *[]corev1.Volume, v corev1.Volume) {
	if i := indexOf(*vs, v.Name, volumeName); i >= 0 {
		(*vs)[i] = v
		return
	}
	*vs = append(*vs, v)
}

// upsertMount replaces the mount of the same volume or appends it.
func upsertMount(ms *[]corev1.VolumeMount, m corev1.VolumeMount) {
	if i := indexOf(*ms, m.Name, mountName); i >= 0 {
		(*ms)[i] = m
		return
	}
	*ms = append(*ms, m)
}
