package webhook

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// restrictedV2Volumes are the volume types OpenShift's restricted-v2 SCC allows.
var restrictedV2Volumes = []string{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

func volumeType(v corev1.Volume) string {
	switch {
	case v.ConfigMap != nil:
		return "configMap"
	case v.CSI != nil:
		return "csi"
	case v.DownwardAPI != nil:
		return "downwardAPI"
	case v.EmptyDir != nil:
		return "emptyDir"
	case v.Ephemeral != nil:
		return "ephemeral"
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.Projected != nil:
		return "projected"
	case v.Secret != nil:
		return "secret"
	}
	return "other"
}

// A pod as OpenShift's restricted-v2 SCC admits it (container runAsUser from the namespace's
// range, the openshift.io/scc annotation, pod seLinuxOptions and fsGroup), with a refresh sidecar
// and env variables: the agent and the sidecar take the app's assigned UID, and nothing kvinject
// adds is something restricted-v2 refuses (a fixed UID outside the range, a capability, privilege
// escalation, a host namespace or path, another SELinux context or fsGroup).
func TestOpenShiftRestrictedV2(t *testing.T) {
	pod := readPod(t, "testdata/mutate/openshift-scc.in.yaml")
	pod.Annotations["kvinject.io/refresh"] = "15m"
	pod.Annotations["kvinject.io/env-DB_PASSWORD"] = "app-pgsql#password"
	before := pod.DeepCopy()
	o := testOptions(t)
	if err := Mutate(pod, testSA("group1", pod.Spec.ServiceAccountName), o); err != nil {
		t.Fatal(err)
	}
	const assigned = int64(1000680000)
	if diff := cmp.Diff(before.Spec.SecurityContext, pod.Spec.SecurityContext); diff != "" {
		t.Errorf("the pod's securityContext (seLinuxOptions, fsGroup) changed (-SCC +injected):\n%s", diff)
	}
	if pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC {
		t.Error("a host namespace")
	}
	for _, v := range pod.Spec.Volumes {
		if !slices.Contains(restrictedV2Volumes, volumeType(v)) {
			t.Errorf("volume %s of a type restricted-v2 refuses", v.Name)
		}
	}
	var added int
	for _, c := range pod.Spec.InitContainers {
		if c.Name != "kvinject-agent" && c.Name != "kvinject-refresh" {
			continue
		}
		added++
		sc := c.SecurityContext
		if sc == nil || ptr.Deref(sc.RunAsUser, -1) != assigned {
			t.Errorf("%s runs as %v, not the app's assigned UID %d", c.Name, sc, assigned)
			continue
		}
		if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || ptr.Deref(sc.Privileged, false) ||
			sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			sc.SELinuxOptions != nil || sc.ProcMount != nil {
			t.Errorf("%s securityContext %+v: restricted-v2 refuses it", c.Name, sc)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("%s uses a host port", c.Name)
			}
		}
	}
	if added != 2 {
		t.Fatalf("%d kvinject init containers, want the agent and the refresh sidecar", added)
	}
	if pod.Annotations["openshift.io/scc"] != "restricted-v2" {
		t.Error("the SCC annotation changed")
	}
}
