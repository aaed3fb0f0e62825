package manifests

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/kvinject/kvinject/credprovider"
)

// TestNodeIdentity: the node mode's DaemonSet is what the provider looks
// for by default (ServiceAccount, volume, path, audience, an hour), has no
// API token, host path, privilege or RBAC, passes the restricted profile's
// fields, and follows the image tag.
func TestNodeIdentity(t *testing.T) {
	objs := objects(t, NodeIdentity, "v9.8.7")
	ds := only[*appsv1.DaemonSet](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	if n := len(all[*rbacv1.RoleBinding](objs)) + len(all[*rbacv1.ClusterRoleBinding](objs)); n != 0 {
		t.Errorf("%d bindings: the node identity needs no RBAC", n)
	}
	if got := "system:serviceaccount:" + sa.Namespace + ":" + sa.Name; got != credprovider.DefaultNodeTokenSubject {
		t.Errorf("ServiceAccount %s, the provider's default subject is %s", got, credprovider.DefaultNodeTokenSubject)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("the ServiceAccount mounts an API token")
	}
	ps := ds.Spec.Template.Spec
	if ps.ServiceAccountName != sa.Name || ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken || ps.HostNetwork || ps.HostPID || ps.HostIPC {
		t.Errorf("pod spec: ServiceAccount %q, automount %v, host namespaces %v %v %v", ps.ServiceAccountName, ps.AutomountServiceAccountToken, ps.HostNetwork, ps.HostPID, ps.HostIPC)
	}
	if len(ps.Volumes) != 1 || ps.Volumes[0].Name != credprovider.DefaultNodeTokenVolume || ps.Volumes[0].Projected == nil || len(ps.Volumes[0].Projected.Sources) != 1 {
		t.Fatalf("volumes %+v, want the one projected %s", ps.Volumes, credprovider.DefaultNodeTokenVolume)
	}
	tok := ps.Volumes[0].Projected.Sources[0].ServiceAccountToken
	if tok == nil || tok.Audience != "api://AzureADTokenExchange" || tok.Path != "token" || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 3600 {
		t.Errorf("token %+v, want audience api://AzureADTokenExchange, path token, 3600 s", tok)
	}
	if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.RunAsUser != nil {
		t.Errorf("pod securityContext %+v: non-root, RuntimeDefault, no fixed UID (OpenShift assigns one)", sc)
	}
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers", len(ps.Containers), len(ps.InitContainers))
	}
	c := ps.Containers[0]
	sc := c.SecurityContext
	if c.Image != "kvinject:v9.8.7" || len(c.Args) != 1 || c.Args[0] != "node-identity" {
		t.Errorf("image %q args %q", c.Image, c.Args)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container securityContext %+v", sc)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Error("no memory limit")
	}
	if u := ds.Spec.UpdateStrategy.RollingUpdate; u == nil || u.MaxSurge == nil || u.MaxSurge.IntValue() != 1 || u.MaxUnavailable == nil || u.MaxUnavailable.IntValue() != 0 {
		t.Errorf("update strategy %+v: the new pod's token before the old one goes", ds.Spec.UpdateStrategy)
	}
}
