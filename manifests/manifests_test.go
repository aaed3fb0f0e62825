package manifests

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/webhookserver"
	"github.com/kvinject/kvinject/webhook"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

// objects renders dir and decodes every object: typed for built-in kinds, unstructured otherwise.
func objects(t *testing.T, dir, tag string) []runtime.Object {
	t.Helper()
	y, err := Render(dir, tag)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, dir, y)
}

// decode splits multi-document YAML (kustomize's or helm template's) and decodes every object:
// typed for built-in kinds, unstructured otherwise.
func decode(t *testing.T, what string, y []byte) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, doc := range strings.Split("\n"+string(y), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(u.Object) == 0 {
			continue // empty, or comments only
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			obj = u
		}
		out = append(out, obj)
	}
	if len(out) == 0 {
		t.Fatalf("%s renders nothing", what)
	}
	return out
}

func only[T runtime.Object](t *testing.T, objs []runtime.Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0]
}

func all[T runtime.Object](objs []runtime.Object) []T {
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	return found
}

// named is the object of type T named name (in any namespace); the test fails without one.
func named[T interface {
	runtime.Object
	GetName() string
}](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	for _, o := range all[T](objs) {
		if o.GetName() == name {
			return o
		}
	}
	var zero T
	t.Fatalf("no %T %s", zero, name)
	return zero
}

func kindsOf(objs []runtime.Object) []string {
	var ks []string
	for _, o := range objs {
		m, _ := meta(o)
		ks = append(ks, o.GetObjectKind().GroupVersionKind().Kind+"/"+m.GetName())
	}
	slices.Sort(ks)
	return ks
}

func meta(o runtime.Object) (metav1.Object, error) {
	if m, ok := o.(metav1.Object); ok {
		return m, nil
	}
	return nil, fmt.Errorf("%T has no metadata", o)
}

func TestEverythingRenders(t *testing.T) {
	dirs := append([]string{"base", "default", "examples", PullCredentials, NodeIdentity}, Overlays...)
	dirs = append(dirs, WithCache...)
	dirs = append(dirs, Examples...)
	for _, d := range dirs {
		t.Run(d, func(t *testing.T) { objects(t, d, "") })
	}
	if a, b := string(must(Render("default", ""))), string(must(Render("overlays/self-signed", ""))); a != b {
		t.Error("default differs from overlays/self-signed")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// The image tag given to Render (the Makefile's IMAGE_TAG) reaches the webhook image,
// --agent-image and the cache's image; SetImageTag edits the kustomization the same way.
func TestImageTag(t *testing.T) {
	for _, o := range slices.Concat(Overlays, WithCache) {
		for _, d := range all[*appsv1.Deployment](objects(t, o, "v9.8.7")) {
			c := d.Spec.Template.Spec.Containers[0]
			if c.Image != "kvinject:v9.8.7" {
				t.Errorf("%s: %s image %q", o, d.Name, c.Image)
			}
			if d.Name == "kvinject-webhook" && (!slices.Contains(c.Args, "--agent-image=$(KVINJECT_AGENT_IMAGE)") || envValue(c, "KVINJECT_AGENT_IMAGE") != c.Image) {
				t.Errorf("%s: --agent-image does not follow the image %q (env %q)", o, c.Image, envValue(c, "KVINJECT_AGENT_IMAGE"))
			}
		}
	}
	orig, err := os.ReadFile(BaseKustomization)
	if err != nil {
		t.Fatal(err)
	}
	edited, err := SetImageTag(orig, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(edited), "newTag: 1.2.3") || !strings.Contains(string(edited), "# The one image of both roles") {
		t.Errorf("SetImageTag lost the tag or the comments:\n%s", edited)
	}
	if again, _ := SetImageTag(edited, "1.2.3"); string(again) != string(edited) {
		t.Error("SetImageTag is not idempotent")
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The policy of the base, exactly: a later edit cannot silently widen who reaches the webhook,
// what fails closed, or what the webhook may read.
func TestBasePolicy(t *testing.T) {
	objs := objects(t, "base", "")
	want := []string{
		"ClusterRole/kvinject-metrics-reader", "ClusterRole/kvinject-webhook", "ClusterRoleBinding/kvinject-webhook", "Deployment/kvinject-webhook",
		"MutatingWebhookConfiguration/kvinject", "Namespace/kvinject-system", "NetworkPolicy/kvinject-webhook", "PodDisruptionBudget/kvinject-webhook",
		"Service/kvinject-webhook", "ServiceAccount/kvinject-webhook",
	}
	if diff := cmp.Diff(want, kindsOf(objs)); diff != "" {
		t.Errorf("base objects (-want +got):\n%s", diff)
	}

	mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs)
	ns := admissionregistrationv1.NamespacedScope
	wantHook := admissionregistrationv1.MutatingWebhook{
		Name:                    "pods.kvinject.io",
		AdmissionReviewVersions: []string{"v1"},
		ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: "kvinject-system", Name: "kvinject-webhook", Path: ptr.To(webhookserver.MutatePath), Port: ptr.To[int32](443),
		}},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &ns,
			},
		}},
		ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kvinject.io/inject": "true"}},
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kvinject-system", "kube-system"},
		}}},
		FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
		SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
		ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		MatchPolicy:        ptr.To(admissionregistrationv1.Equivalent),
		TimeoutSeconds:     ptr.To[int32](5),
	}
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	if diff := cmp.Diff(wantHook, mwc.Webhooks[0]); diff != "" {
		t.Errorf("webhook (-want +got):\n%s", diff)
	}
	if mwc.Name != "kvinject" {
		t.Errorf("webhook configuration named %q", mwc.Name)
	}

	// RBAC: get/list/watch on serviceaccounts, the reviews that guard
	// /metrics, nodes and the API server's /metrics, nothing else, bound to the webhook's ServiceAccount only.
	cr := named[*rbacv1.ClusterRole](t, objs, "kvinject-webhook")
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
		// --env-delivery auto: kubelet versions and the EnvFiles gate.
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
	}
	if diff := cmp.Diff(wantRules, cr.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	// The role for whoever scrapes /metrics, bound by the user.
	reader := named[*rbacv1.ClusterRole](t, objs, "kvinject-metrics-reader")
	if diff := cmp.Diff([]rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}, reader.Rules); diff != "" {
		t.Errorf("ClusterRole kvinject-metrics-reader rules (-want +got):\n%s", diff)
	}
	if cr.AggregationRule != nil {
		t.Error("ClusterRole aggregates other roles")
	}
	crb := only[*rbacv1.ClusterRoleBinding](t, objs)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", cr.Name)
	if n := len(all[*rbacv1.Role](objs)) + len(all[*rbacv1.RoleBinding](objs)); n != 0 {
		t.Errorf("base has %d Roles/RoleBindings, want none", n)
	}

	d := only[*appsv1.Deployment](t, objs)
	checkDeployment(t, d)

	pdb := only[*policyv1.PodDisruptionBudget](t, objs)
	if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(1) || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB minAvailable %v maxUnavailable %v, want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	if diff := cmp.Diff(d.Spec.Selector, pdb.Spec.Selector); diff != "" {
		t.Errorf("PDB selector differs from the Deployment's:\n%s", diff)
	}

	svc := only[*corev1.Service](t, objs)
	wantPorts := []corev1.ServicePort{
		{Name: "https", Port: 443, TargetPort: intstr.FromString("webhook"), Protocol: corev1.ProtocolTCP},
		{Name: "metrics", Port: 8443, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
	}
	if diff := cmp.Diff(wantPorts, svc.Spec.Ports); diff != "" {
		t.Errorf("Service ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, svc.Spec.Selector); diff != "" {
		t.Errorf("Service selector differs from the Deployment's:\n%s", diff)
	}
	if svc.Name != wantHook.ClientConfig.Service.Name || svc.Namespace != wantHook.ClientConfig.Service.Namespace {
		t.Error("the webhook does not call this Service")
	}

	// Ingress: admission and probes from anywhere, metrics from the monitoring namespace only.
	np := only[*networkingv1.NetworkPolicy](t, objs)
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, np.Spec.PodSelector.MatchLabels); diff != "" {
		t.Errorf("NetworkPolicy selects other pods than the Deployment's:\n%s", diff)
	}
	if got := metricsSource(np); got != "monitoring" {
		t.Errorf("metrics open to namespace %q, want monitoring", got)
	}
}

// metricsSource is the namespace a NetworkPolicy lets reach port metrics.
func metricsSource(np *networkingv1.NetworkPolicy) string {
	tcp := corev1.ProtocolTCP
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil || *p.Port != intstr.FromString("metrics") || p.Protocol == nil || *p.Protocol != tcp {
				continue
			}
			if len(r.From) == 1 && r.From[0].NamespaceSelector != nil && r.From[0].PodSelector == nil {
				return r.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
			}
			return "(anywhere)"
		}
	}
	return "(nowhere)"
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name string) {
	t.Helper()
	checkBindingTo(t, ref, subjects, kind, name, "kvinject-webhook")
}

// checkBindingTo checks that a binding gives the role kind/name to the ServiceAccount
// serviceAccount of kvinject-system, and to nobody else.
func checkBindingTo(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name, serviceAccount string) {
	t.Helper()
	if ref != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: name}) {
		t.Errorf("binding refers to %+v, want %s %s", ref, kind, name)
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: "kvinject-system"}}
	if diff := cmp.Diff(want, subjects); diff != "" {
		t.Errorf("binding subjects (-want +got):\n%s", diff)
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	c := checkServer(t, d, "kvinject-webhook", "webhook")
	if diff := cmp.Diff([]string{"/kvinject-webhook"}, c.Command); diff != "" {
		t.Errorf("webhook command (-want +got):\n%s", diff)
	}
	for _, a := range []string{"--agent-image=$(KVINJECT_AGENT_IMAGE)", "--cert-dir=/var/run/kvinject/serving-certs",
		"--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %q", c.Args, a)
		}
	}
	if envValue(c, "KVINJECT_AGENT_IMAGE") != c.Image || !strings.HasPrefix(c.Image, ImageName+":") {
		t.Errorf("image %q, agent image %q", c.Image, envValue(c, "KVINJECT_AGENT_IMAGE"))
	}
}

// checkServer checks what kvinject's servers (the webhook and the cache) share: 2 replicas spread
// over nodes, Pod Security restricted without a fixed UID, one container serving port portName
// (9443), metrics (8443) and probes (8081), a graceful stop, resources, the cert dir mounted. It
// returns the container.
func checkServer(t *testing.T, d *appsv1.Deployment, serviceAccount, portName string) corev1.Container {
	t.Helper()
	if d.Namespace != "kvinject-system" || ptr.Deref(d.Spec.Replicas, 0) != 2 {
		t.Errorf("Deployment %s/%s replicas %d", d.Namespace, d.Name, ptr.Deref(d.Spec.Replicas, 0))
	}
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != serviceAccount {
		t.Errorf("serviceAccountName %q", ps.ServiceAccountName)
	}
	anti := ps.Affinity.PodAntiAffinity
	if anti == nil || len(anti.PreferredDuringSchedulingIgnoredDuringExecution) != 1 || len(anti.RequiredDuringSchedulingIgnoredDuringExecution) != 0 ||
		anti.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" ||
		!cmp.Equal(anti.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector, d.Spec.Selector) {
		t.Errorf("want one preferred pod anti-affinity by hostname on the Deployment's labels, got %+v", anti)
	}
	// restricted, and no fixed user or group anywhere (OpenShift SCCs assign them).
	psc := ps.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v", psc)
	}
	if psc.RunAsUser != nil || psc.RunAsGroup != nil || psc.FSGroup != nil || len(psc.SupplementalGroups) != 0 {
		t.Error("pod securityContext fixes a UID, GID or fsGroup")
	}
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers; want 1, 0", len(ps.Containers), len(ps.InitContainers))
	}
	if ps.HostNetwork || ps.HostPID || ps.HostIPC || ptr.Deref(ps.AutomountServiceAccountToken, true) == false {
		t.Error("host namespaces, or no API token")
	}
	tgp := ptr.Deref(ps.TerminationGracePeriodSeconds, 30)
	c := ps.Containers[0]
	csc := c.SecurityContext
	wantCSC := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(wantCSC, csc); diff != "" {
		t.Errorf("container securityContext (-want +got):\n%s", diff)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Exec != nil {
		t.Fatal("want a native preStop sleep (no shell in the image)")
	}
	// The endpoint drains during the sleep, then controller-runtime shuts down gracefully (25 s).
	if s := c.Lifecycle.PreStop.Sleep.Seconds; s < 5 || tgp < s+25+5 {
		t.Errorf("preStop sleep %d s with terminationGracePeriodSeconds %d leaves no time for the 25 s graceful shutdown", s, tgp)
	}
	// Each server runs its own binary of the image, which links only what it serves.
	if want := []string{"/" + serviceAccount}; !slices.Equal(c.Command, want) {
		t.Errorf("command %q, want %q", c.Command, want)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{portName: 9443, "metrics": 8443, "health": 8081}, ports); diff != "" {
		t.Errorf("container ports (-want +got):\n%s", diff)
	}
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("health") {
			t.Errorf("%s probe %+v, want GET %s on port health", name, p, path)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if c.Resources.Requests.Name(r, "").IsZero() || c.Resources.Limits.Name(r, "").IsZero() {
			t.Errorf("resources: %s request or limit missing", r)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "serving-cert" && m.MountPath == "/var/run/kvinject/serving-certs"
	}) {
		t.Error("the cert dir is not mounted")
	}
	return c
}

// RBAC of the whole installation: no wildcard anywhere, and Secrets only as the overlay allows.
func checkRBAC(t *testing.T, objs []runtime.Object) {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, r := range all[*rbacv1.ClusterRole](objs) {
		rules = append(rules, r.Rules...)
	}
	for _, r := range all[*rbacv1.Role](objs) {
		rules = append(rules, r.Rules...)
	}
	for _, r := range rules {
		for _, s := range slices.Concat(r.APIGroups, r.Resources, r.Verbs, r.ResourceNames) {
			if strings.Contains(s, "*") {
				t.Errorf("wildcard in rule %+v", r)
			}
		}
		if len(r.NonResourceURLs) != 0 && !slices.Equal(r.NonResourceURLs, []string{"/metrics"}) {
			t.Errorf("non-resource URLs other than /metrics in rule %+v", r)
		}
	}
}

func TestSelfSignedOverlay(t *testing.T) {
	objs := objects(t, "overlays/self-signed", "")
	checkDeployment(t, only[*appsv1.Deployment](t, objs))
	checkRBAC(t, objs)
	role := only[*rbacv1.Role](t, objs)
	wantRole := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"kvinject-webhook-cert"}, Verbs: []string{"get", "update", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
	}
	if diff := cmp.Diff(wantRole, role.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	if role.Namespace != "kvinject-system" {
		t.Errorf("Role in namespace %q", role.Namespace)
	}
	rb := only[*rbacv1.RoleBinding](t, objs)
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", role.Name)

	var cabundle *rbacv1.ClusterRole
	for _, cr := range all[*rbacv1.ClusterRole](objs) {
		if cr.Name == "kvinject-webhook-cabundle" {
			cabundle = cr
		} else if cr.Name != "kvinject-webhook" && cr.Name != "kvinject-metrics-reader" {
			t.Errorf("unexpected ClusterRole %s", cr.Name)
		}
	}
	if cabundle == nil {
		t.Fatal("no ClusterRole kvinject-webhook-cabundle")
	}
	wantCR := []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{"kvinject"}, Verbs: []string{"get", "patch", "watch"}}}
	if diff := cmp.Diff(wantCR, cabundle.Rules); diff != "" {
		t.Errorf("ClusterRole kvinject-webhook-cabundle rules (-want +got):\n%s", diff)
	}
	for _, b := range all[*rbacv1.ClusterRoleBinding](objs) {
		checkBinding(t, b.RoleRef, b.Subjects, "ClusterRole", b.RoleRef.Name)
	}

	d := only[*appsv1.Deployment](t, objs)
	c := d.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--self-signed-cert-secret=kvinject-webhook-cert", "--self-signed-namespace=$(POD_NAMESPACE)",
		"--service-name=kvinject-webhook", "--webhook-config-name=kvinject"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args lack %q", a)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}) {
		t.Error("POD_NAMESPACE does not come from the downward API")
	}
	v := volume(t, d, "serving-cert")
	if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("cert dir volume %+v, want a memory emptyDir", v.VolumeSource)
	}
	if m := mount(t, c, "serving-cert"); m.ReadOnly {
		t.Error("the webhook cannot write its certificate: the cert dir is read-only")
	}
	mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs)
	if len(mwc.Annotations) != 0 {
		t.Errorf("annotations %v: nothing else may inject the caBundle", mwc.Annotations)
	}
	if len(all[*corev1.Secret](objs)) != 0 {
		t.Error("the overlay ships a Secret")
	}
}

func volume(t *testing.T, d *appsv1.Deployment, name string) corev1.Volume {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return corev1.Volume{}
}

func mount(t *testing.T, c corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no mount %s", name)
	return corev1.VolumeMount{}
}

// An overlay whose certificate comes from elsewhere: no extra RBAC, no self-signed flags, the
// cert dir is the Secret read-only.
func checkExternalCert(t *testing.T, objs []runtime.Object, secret string) {
	t.Helper()
	d := only[*appsv1.Deployment](t, objs)
	checkDeployment(t, d)
	checkRBAC(t, objs)
	if n := len(all[*rbacv1.Role](objs)) + len(all[*rbacv1.ClusterRole](objs)); n != 2 {
		t.Errorf("%d roles, want the base's two ClusterRoles only", n)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--self-signed") {
			t.Errorf("self-signed flag %q", a)
		}
	}
	v := volume(t, d, "serving-cert")
	if v.Secret == nil || v.Secret.SecretName != secret || v.EmptyDir != nil {
		t.Errorf("cert dir volume %+v, want Secret %s", v.VolumeSource, secret)
	}
	if !mount(t, c, "serving-cert").ReadOnly {
		t.Error("cert dir mount not read-only")
	}
}

func TestCertManagerOverlay(t *testing.T) {
	objs := objects(t, "overlays/cert-manager", "")
	checkExternalCert(t, objs, "kvinject-webhook-cert")
	mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs)
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != "kvinject-system/kvinject-webhook-cert" {
		t.Errorf("inject-ca-from %q", got)
	}
	var serving *unstructured.Unstructured
	kinds := map[string]int{}
	for _, u := range all[*unstructured.Unstructured](objs) {
		if u.GroupVersionKind().Group != "cert-manager.io" || u.GetAPIVersion() != "cert-manager.io/v1" {
			t.Errorf("unexpected object %s %s", u.GetAPIVersion(), u.GetKind())
		}
		kinds[u.GetKind()]++
		if u.GetNamespace() != "kvinject-system" {
			t.Errorf("%s %s in namespace %q", u.GetKind(), u.GetName(), u.GetNamespace())
		}
		if u.GetKind() == "Certificate" && u.GetName() == "kvinject-webhook-cert" {
			serving = u
		}
	}
	if kinds["Certificate"] != 2 || kinds["Issuer"] != 2 {
		t.Errorf("cert-manager objects %v, want 2 Issuers and 2 Certificates", kinds)
	}
	if serving == nil {
		t.Fatal("no Certificate kvinject-webhook-cert (named by inject-ca-from)")
	}
	secretName, _, _ := unstructured.NestedString(serving.Object, "spec", "secretName")
	dns, _, _ := unstructured.NestedStringSlice(serving.Object, "spec", "dnsNames")
	issuer, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name")
	if secretName != "kvinject-webhook-cert" || !slices.Contains(dns, "kvinject-webhook.kvinject-system.svc") || issuer != "kvinject-ca" {
		t.Errorf("serving Certificate: secretName %q dnsNames %v issuer %q", secretName, dns, issuer)
	}
}

func TestOpenShiftOverlay(t *testing.T) {
	objs := objects(t, "overlays/openshift", "")
	checkExternalCert(t, objs, "kvinject-webhook-cert")
	svc := only[*corev1.Service](t, objs)
	if got := svc.Annotations["service.beta.openshift.io/serving-cert-secret-name"]; got != "kvinject-webhook-cert" {
		t.Errorf("Service serving-cert-secret-name %q", got)
	}
	mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs)
	if got := mwc.Annotations["service.beta.openshift.io/inject-cabundle"]; got != "true" {
		t.Errorf("inject-cabundle %q", got)
	}
	if n := len(all[*unstructured.Unstructured](objs)); n != 0 {
		t.Errorf("%d non-core objects", n)
	}
	if got := metricsSource(only[*networkingv1.NetworkPolicy](t, objs)); got != "openshift-monitoring" {
		t.Errorf("metrics open to namespace %q, want openshift-monitoring", got)
	}
}

// The examples: what the contract says, accepted by the webhook's own mutation.
// TestPullCredentials: kubelets may ask for a token of Entra ID's audience
// for pods that pull without being injected, and for nothing else.
func TestPullCredentials(t *testing.T) {
	objs := objects(t, PullCredentials, "")
	role := only[*rbacv1.ClusterRole](t, objs)
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"api://AzureADTokenExchange"}, Verbs: []string{"request-serviceaccounts-token-audience"}}}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	b := only[*rbacv1.ClusterRoleBinding](t, objs)
	if b.RoleRef.Name != role.Name || len(b.Subjects) != 1 || b.Subjects[0].Kind != "Group" || b.Subjects[0].Name != "system:nodes" {
		t.Errorf("ClusterRoleBinding %+v", b)
	}
}

func TestExamples(t *testing.T) {
	objs := objects(t, "examples/dbreaderapp", "")
	sa := only[*corev1.ServiceAccount](t, objs)
	if sa.Namespace != "group1" || sa.Name != "dbreader" || sa.Annotations["azure.workload.identity/client-id"] != "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" {
		t.Errorf("ServiceAccount %s/%s %v", sa.Namespace, sa.Name, sa.Annotations)
	}
	wantAnnotations := map[string]map[string]string{
		// The reference Deployment: its env entries stay, the webhook points them at Key Vault.
		"dbreaderapp":       {"kvinject.io/vault": "homelab-kv", "kvinject.io/env-USERNAME": "app-pgsql#username", "kvinject.io/env-PASSWORD": "app-pgsql#password"},
		"dbreaderapp-files": {"kvinject.io/vault": "homelab-kv", "kvinject.io/secret-username": "app-pgsql#username", "kvinject.io/secret-password": "app-pgsql#password"},
	}
	deployments := all[*appsv1.Deployment](objs)
	if len(deployments) != len(wantAnnotations) {
		t.Fatalf("%d Deployments, want %d", len(deployments), len(wantAnnotations))
	}
	for _, d := range deployments {
		tpl := d.Spec.Template
		if d.Namespace != "group1" || tpl.Labels["kvinject.io/inject"] != "true" || !cmp.Equal(wantAnnotations[d.Name], tpl.Annotations) ||
			tpl.Spec.ServiceAccountName != "dbreader" {
			t.Errorf("%s: %s labels %v annotations %v sa %q", d.Name, d.Namespace, tpl.Labels, tpl.Annotations, tpl.Spec.ServiceAccountName)
		}
	}
	// The image comes through the credential provider: the ServiceAccount
	// names the registry credential, no pod names a pull Secret.
	if got := sa.Annotations["kvinject.io/pull-secret"]; got != "https://homelab-kv.vault.azure.net/secrets/mirror-registry-cred" {
		t.Errorf("ServiceAccount kvinject.io/pull-secret %q", got)
	}
	for _, d := range deployments {
		if len(d.Spec.Template.Spec.ImagePullSecrets) != 0 {
			t.Errorf("%s names imagePullSecrets %v", d.Name, d.Spec.Template.Spec.ImagePullSecrets)
		}
	}
	// Once admitted, no container reads a Secret.
	for _, p := range mutatedPods(t, "examples/dbreaderapp") {
		for _, c := range p.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					t.Errorf("%s still reads a Secret: %s", p.Name, e.Name)
				}
			}
		}
	}
	for _, ex := range Examples {
		for _, p := range mutatedPods(t, ex) {
			if p.Annotations["kvinject.io/status"] != "injected" {
				t.Errorf("%s: not injected", ex)
			}
		}
	}
}

// mutatedPods renders an example, and runs each workload's pod template through the webhook's
// Mutate with its ServiceAccount, as admission would.
func mutatedPods(t *testing.T, dir string) []*corev1.Pod {
	t.Helper()
	objs := objects(t, dir, "")
	sas := map[string]*corev1.ServiceAccount{}
	for _, sa := range all[*corev1.ServiceAccount](objs) {
		sas[sa.Name] = sa
	}
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:test"
	o.TenantID = "11111111-2222-3333-4444-555555555555"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for _, d := range all[*appsv1.Deployment](objs) {
		pod := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(),
			Spec:       *d.Spec.Template.Spec.DeepCopy(),
		}
		pod.Namespace, pod.Name = d.Namespace, d.Name+"-example"
		sa := sas[pod.Spec.ServiceAccountName]
		if sa == nil {
			t.Fatalf("%s: Deployment %s uses ServiceAccount %q, not in the example", dir, d.Name, pod.Spec.ServiceAccountName)
		}
		if err := webhook.Mutate(pod, webhook.ServiceAccount{Namespace: sa.Namespace, Name: sa.Name, Annotations: sa.Annotations}, &o); err != nil {
			t.Fatalf("%s: the webhook denies Deployment %s: %v", dir, d.Name, err)
		}
		pods = append(pods, pod)
	}
	if len(pods) == 0 {
		t.Fatalf("%s: no workload", dir)
	}
	return pods
}

// ---- the real API server (envtest) ----

func TestMain(m *testing.M) {
	code := m.Run()
	k8stest.StopShared()
	os.Exit(code)
}

// apiServer is a real kube-apiserver and etcd (once per test binary) from bin/k8s/
// (test/cluster/build-binaries.sh). Missing binaries skip the test, or fail it under CI.
func apiServer(t *testing.T) *rest.Config { return k8stest.Shared(t) }

// Every object of every overlay (with and without the cache) and example is accepted by the real
// API server (server-side apply, dry run). cert-manager.io objects are not: envtest has no
// cert-manager CRDs, so they are only checked by TestCertManagerOverlay and TestWithCache. The
// webhook's and the cache's pods, and each example's pod as the webhook mutates it, pass Pod
// Security "restricted" (the namespaces enforce it).
func TestServerSideDryRun(t *testing.T) {
	cfg := apiServer(t)
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	restricted := map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
	for _, ns := range []string{"kvinject-system", "group1"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: restricted}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	apply := func(t *testing.T, obj runtime.Object) {
		t.Helper()
		u := &unstructured.Unstructured{}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		u.Object = m
		ac := client.ApplyConfigurationFromUnstructured(u)
		if err := c.Apply(ctx, ac, client.FieldOwner("kvinject-manifests-test"), client.ForceOwnership, client.DryRunAll); err != nil {
			t.Errorf("%s %s/%s rejected: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	dirs := slices.Concat(Overlays, WithCache, Examples)
	dirs = append(dirs, "default", PullCredentials)
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			for _, obj := range objects(t, dir, "") {
				if u, ok := obj.(*unstructured.Unstructured); ok && u.GroupVersionKind().Group == "cert-manager.io" {
					continue // no CRDs here; see TestCertManagerOverlay
				}
				apply(t, obj)
			}
		})
	}
	// Pods: ServiceAccounts must exist for pod admission, so make them for real.
	for _, sa := range []nsName{{"kvinject-system", "kvinject-webhook"}, {"kvinject-system", "kvinject-cache"}, {"group1", "dbreader"}, {"group1", "inventory"}, {"group1", "report"}} {
		if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.ns, Name: sa.name}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	t.Run("webhook and cache pods restricted", func(t *testing.T) {
		for _, o := range slices.Concat(Overlays, WithCache) {
			for _, d := range all[*appsv1.Deployment](objects(t, o, "")) {
				pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-pod"},
					Spec: d.Spec.Template.Spec}
				pod.Labels = d.Spec.Template.Labels
				apply(t, pod)
			}
		}
	})
	t.Run("injected example pods restricted", func(t *testing.T) {
		for _, ex := range Examples {
			for _, p := range mutatedPods(t, ex) {
				if p.Name == "dbreaderapp-example" {
					// The reference Deployment as the reference setup has it sets no
					// securityContext of its own; e2e TestEnvFromKeyVault runs the same
					// env delivery under Pod Security restricted.
					continue
				}
				apply(t, p)
			}
		}
	})
}

type nsName struct{ ns, name string }
