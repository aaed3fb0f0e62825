package manifests

import (
	"flag"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/selfcert"
)

// cacheURL is the webhook's --cache-url: the cache's Service.
const cacheURL = "https://kvinject-cache.kvinject-system.svc.cluster.local."

// cacheSource is what differs between the installations with the cache: the certificate source.
type cacheSource struct {
	dir, overlay string
	// caFile is the webhook's --cache-ca-file.
	caFile string
	// monitoring is the namespace that may scrape the cache's /metrics.
	monitoring string
	// extraArgs are the webhook's other args for the cache's certificate.
	extraArgs []string
	// objects are the objects of dir beyond those of overlay.
	objects []string
}

// The objects every installation with the cache adds to its overlay.
var cacheObjects = []string{
	"ClusterRole/kvinject-cache", "ClusterRoleBinding/kvinject-cache", "Deployment/kvinject-cache", "NetworkPolicy/kvinject-cache",
	"PodDisruptionBudget/kvinject-cache", "Service/kvinject-cache", "ServiceAccount/kvinject-cache",
}

var cacheSources = []cacheSource{
	{
		dir: "with-cache/self-signed", overlay: "overlays/self-signed",
		caFile: "/var/run/kvinject/serving-certs/ca.crt", monitoring: "monitoring",
		extraArgs: []string{"--self-signed-cache-secret=kvinject-cache-cert", "--cache-service-name=kvinject-cache"},
		objects:   []string{"Role/kvinject-webhook-cache-cert", "RoleBinding/kvinject-webhook-cache-cert"},
	},
	{
		dir: "with-cache/cert-manager", overlay: "overlays/cert-manager",
		caFile: "/var/run/kvinject/serving-certs/ca.crt", monitoring: "monitoring",
		objects: []string{"Certificate/kvinject-cache-cert"},
	},
	{
		dir: "with-cache/openshift", overlay: "overlays/openshift",
		caFile: "/var/run/kvinject/cache-ca/service-ca.crt", monitoring: "openshift-monitoring",
		objects: []string{"ConfigMap/kvinject-cache-ca"},
	},
}

func TestCacheSourcesListed(t *testing.T) {
	var dirs []string
	for _, s := range cacheSources {
		dirs = append(dirs, s.dir)
	}
	if !slices.Equal(dirs, WithCache) {
		t.Errorf("tested %v, installable %v", dirs, WithCache)
	}
	for _, d := range WithCache {
		if !slices.Contains(Overlays, "overlays/"+path.Base(d)) {
			t.Errorf("%s has no overlay of its name", d)
		}
	}
}

// Each installation with the cache is its overlay plus the cache: every object of the overlay is
// there unchanged, but for the webhook's cache args (and, on OpenShift, the volume holding the
// cache's CA); nothing of the cache leaks into the overlays.
func TestWithCacheExtendsOverlay(t *testing.T) {
	for _, src := range cacheSources {
		t.Run(src.dir, func(t *testing.T) {
			plain, with := objects(t, src.overlay, ""), objects(t, src.dir, "")
			want := slices.Concat(kindsOf(plain), cacheObjects, src.objects)
			slices.Sort(want)
			if diff := cmp.Diff(want, kindsOf(with)); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			byName := map[string]runtime.Object{}
			for _, o := range with {
				byName[kindName(o)] = o
			}
			for _, o := range plain {
				got := byName[kindName(o)]
				if d, ok := got.(*appsv1.Deployment); ok && d.Name == "kvinject-webhook" {
					got = withoutCache(d)
				}
				if diff := cmp.Diff(o, got); diff != "" {
					t.Errorf("%s differs from %s's beyond the cache (-overlay +with cache):\n%s", kindName(o), src.overlay, diff)
				}
			}
		})
	}
	for _, o := range Overlays {
		for _, obj := range objects(t, o, "") {
			if strings.Contains(kindName(obj), "cache") {
				t.Errorf("%s: %s", o, kindName(obj))
			}
		}
		c := only[*appsv1.Deployment](t, objects(t, o, "")).Spec.Template.Spec.Containers[0]
		for _, a := range c.Args {
			if strings.Contains(a, "cache") {
				t.Errorf("%s: the webhook has %s", o, a)
			}
		}
	}
}

func kindName(o runtime.Object) string {
	m, _ := meta(o)
	return o.GetObjectKind().GroupVersionKind().Kind + "/" + m.GetName()
}

// withoutCache is a copy of the webhook's Deployment without what an installation with the cache
// adds to it.
func withoutCache(d *appsv1.Deployment) *appsv1.Deployment {
	d = d.DeepCopy()
	ps := &d.Spec.Template.Spec
	c := &ps.Containers[0]
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool {
		return strings.HasPrefix(a, "--cache-") || strings.HasPrefix(a, "--self-signed-cache-")
	})
	c.VolumeMounts = slices.DeleteFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "cache-ca" })
	ps.Volumes = slices.DeleteFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == "cache-ca" })
	return d
}

// The cache as every certificate source installs it: what it may do, who may reach it, how it
// runs, and the webhook's args that send pods to it.
func TestWithCache(t *testing.T) {
	for _, src := range cacheSources {
		t.Run(src.dir, func(t *testing.T) {
			objs := objects(t, src.dir, "")
			checkRBAC(t, objs)
			d := named[*appsv1.Deployment](t, objs, "kvinject-cache")
			checkCacheDeployment(t, d)
			webhook := named[*appsv1.Deployment](t, objs, "kvinject-webhook")
			checkDeployment(t, webhook)
			if c := d.Spec.Template.Spec.Containers[0]; c.Image != webhook.Spec.Template.Spec.Containers[0].Image {
				t.Errorf("cache image %q is not the webhook's %q", c.Image, webhook.Spec.Template.Spec.Containers[0].Image)
			}

			// RBAC: the reviews, nothing else, for the cache's ServiceAccount only.
			cr := named[*rbacv1.ClusterRole](t, objs, "kvinject-cache")
			wantRules := []rbacv1.PolicyRule{
				{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
				{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
			}
			if diff := cmp.Diff(wantRules, cr.Rules); diff != "" {
				t.Errorf("ClusterRole kvinject-cache rules (-want +got):\n%s", diff)
			}
			crb := named[*rbacv1.ClusterRoleBinding](t, objs, "kvinject-cache")
			checkBindingTo(t, crb.RoleRef, crb.Subjects, "ClusterRole", "kvinject-cache", "kvinject-cache")
			for _, rb := range all[*rbacv1.RoleBinding](objs) {
				if slices.ContainsFunc(rb.Subjects, func(s rbacv1.Subject) bool { return s.Name == "kvinject-cache" }) {
					t.Errorf("RoleBinding %s gives the cache more", rb.Name)
				}
			}
			for _, b := range all[*rbacv1.ClusterRoleBinding](objs) {
				if b.Name != crb.Name && slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Name == "kvinject-cache" }) {
					t.Errorf("ClusterRoleBinding %s gives the cache more", b.Name)
				}
			}
			sa := named[*corev1.ServiceAccount](t, objs, "kvinject-cache")
			if sa.Namespace != "kvinject-system" || sa.AutomountServiceAccountToken != nil {
				t.Errorf("ServiceAccount %s/%s automount %v: the cache needs its token for TokenReviews", sa.Namespace, sa.Name, sa.AutomountServiceAccountToken)
			}

			pdb := named[*policyv1.PodDisruptionBudget](t, objs, "kvinject-cache")
			if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(1) || pdb.Spec.MaxUnavailable != nil {
				t.Errorf("PDB minAvailable %v maxUnavailable %v, want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
			}
			if diff := cmp.Diff(d.Spec.Selector, pdb.Spec.Selector); diff != "" {
				t.Errorf("PDB selector differs from the Deployment's:\n%s", diff)
			}

			// The Service is what --cache-url names.
			svc := named[*corev1.Service](t, objs, "kvinject-cache")
			wantPorts := []corev1.ServicePort{
				{Name: "https", Port: 443, TargetPort: intstr.FromString("cache"), Protocol: corev1.ProtocolTCP},
				{Name: "metrics", Port: 8443, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
			}
			if diff := cmp.Diff(wantPorts, svc.Spec.Ports); diff != "" {
				t.Errorf("Service ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(d.Spec.Selector.MatchLabels, svc.Spec.Selector); diff != "" {
				t.Errorf("Service selector differs from the Deployment's:\n%s", diff)
			}
			if u, err := url.Parse(cacheURL); err != nil || u.Hostname() != svc.Name+"."+svc.Namespace+".svc.cluster.local." || u.Port() != "" {
				t.Errorf("--cache-url %s does not name the Service %s/%s on port 443", cacheURL, svc.Namespace, svc.Name)
			}

			// Ingress: the cache from every pod, probes from anywhere, metrics from monitoring.
			np := named[*networkingv1.NetworkPolicy](t, objs, "kvinject-cache")
			if diff := cmp.Diff(d.Spec.Selector.MatchLabels, np.Spec.PodSelector.MatchLabels); diff != "" {
				t.Errorf("NetworkPolicy selects other pods than the Deployment's:\n%s", diff)
			}
			tcp := ptr.To(corev1.ProtocolTCP)
			port := func(name string) []networkingv1.NetworkPolicyPort {
				return []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromString(name)), Protocol: tcp}}
			}
			wantIngress := []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}, Ports: port("cache")},
				{Ports: port("health")},
				{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"kubernetes.io/metadata.name": src.monitoring}}}}, Ports: port("metrics")},
			}
			if diff := cmp.Diff(wantIngress, np.Spec.Ingress); diff != "" {
				t.Errorf("NetworkPolicy ingress (-want +got):\n%s", diff)
			}
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("policyTypes %v: egress must stay open (API server, Entra ID, Key Vault)", np.Spec.PolicyTypes)
			}

			// The webhook sends opted-in pods to the cache with the CA that signs its certificate,
			// from a file it has mounted.
			wc := webhook.Spec.Template.Spec.Containers[0]
			var cacheArgs []string
			for _, a := range wc.Args {
				if strings.Contains(a, "cache") {
					cacheArgs = append(cacheArgs, a)
				}
			}
			wantArgs := slices.Concat([]string{"--cache-url=" + cacheURL}, src.extraArgs, []string{"--cache-ca-file=" + src.caFile})
			slices.Sort(wantArgs)
			slices.Sort(cacheArgs)
			if diff := cmp.Diff(wantArgs, cacheArgs); diff != "" {
				t.Errorf("webhook's cache args (-want +got):\n%s", diff)
			}
			if !slices.ContainsFunc(wc.VolumeMounts, func(m corev1.VolumeMount) bool {
				return path.Dir(src.caFile) == m.MountPath
			}) {
				t.Errorf("--cache-ca-file %s is in no volume of the webhook", src.caFile)
			}
		})
	}
}

// checkCacheDeployment checks the cache's Deployment: a kvinject server (checkServer) running
// /kvinject-cache whose only volume is its certificate, read-only.
func checkCacheDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	c := checkServer(t, d, "kvinject-cache", "cache")
	if diff := cmp.Diff([]string{"/kvinject-cache"}, c.Command); diff != "" {
		t.Errorf("cache command (-want +got):\n%s", diff)
	}
	want := []string{"--cert-dir=/var/run/kvinject/serving-certs", "--port=9443", "--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"}
	if diff := cmp.Diff(want, c.Args); diff != "" {
		t.Errorf("cache args (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(c.Image, ImageName+":") || len(c.Env) != 0 || len(c.EnvFrom) != 0 {
		t.Errorf("image %q, env %v %v", c.Image, c.Env, c.EnvFrom)
	}
	// Nothing writable: values live in memory only.
	wantVolumes := []corev1.Volume{{Name: "serving-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "kvinject-cache-cert"}}}}
	if diff := cmp.Diff(wantVolumes, d.Spec.Template.Spec.Volumes); diff != "" {
		t.Errorf("volumes (-want +got):\n%s", diff)
	}
	wantMounts := []corev1.VolumeMount{{Name: "serving-cert", MountPath: "/var/run/kvinject/serving-certs", ReadOnly: true}}
	if diff := cmp.Diff(wantMounts, c.VolumeMounts); diff != "" {
		t.Errorf("volume mounts (-want +got):\n%s", diff)
	}
	if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil || *d.Spec.Strategy.RollingUpdate.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("rolling update %+v, want maxUnavailable 0", d.Spec.Strategy.RollingUpdate)
	}
}

// The certificate of each source: who issues it into the Secret the cache mounts, and where the
// webhook finds the CA that signs it.
func TestWithCacheSelfSigned(t *testing.T) {
	objs := objects(t, "with-cache/self-signed", "")
	role := named[*rbacv1.Role](t, objs, "kvinject-webhook-cache-cert")
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"kvinject-cache-cert"}, Verbs: []string{"get", "update", "watch"}}}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	if role.Namespace != "kvinject-system" {
		t.Errorf("Role in namespace %q", role.Namespace)
	}
	rb := named[*rbacv1.RoleBinding](t, objs, "kvinject-webhook-cache-cert")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", role.Name)
	// Creating it comes with the overlay's Role (create cannot be limited by name).
	if !slices.ContainsFunc(named[*rbacv1.Role](t, objs, "kvinject-webhook-cert").Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.Resources, []string{"secrets"}) && slices.Equal(r.Verbs, []string{"create"})
	}) {
		t.Error("the webhook may not create the cache's Secret")
	}
	// The Secret the webhook writes is the one the cache mounts, for the cache's Service; the
	// CA file is in its own writable cert dir, where it writes ca.crt.
	webhook := named[*appsv1.Deployment](t, objs, "kvinject-webhook")
	args := webhook.Spec.Template.Spec.Containers[0].Args
	cache := named[*appsv1.Deployment](t, objs, "kvinject-cache")
	if secret := cache.Spec.Template.Spec.Volumes[0].Secret.SecretName; !slices.Contains(args, "--self-signed-cache-secret="+secret) {
		t.Errorf("the webhook does not write the Secret %s the cache mounts", secret)
	}
	if svc := named[*corev1.Service](t, objs, "kvinject-cache"); !slices.Contains(args, "--cache-service-name="+svc.Name) {
		t.Errorf("the cache's certificate does not name its Service %s", svc.Name)
	}
	if m := mount(t, webhook.Spec.Template.Spec.Containers[0], "serving-cert"); m.ReadOnly || m.MountPath != "/var/run/kvinject/serving-certs" {
		t.Errorf("cert dir mount %+v: the webhook cannot write ca.crt there", m)
	}
	// selfcert reads these args as the webhook will: it issues the certificate for the host of
	// --cache-url, and writes the CA bundle where --cache-ca-file says.
	o := selfcert.DefaultOptions()
	fs := flag.NewFlagSet("kvinject webhook", flag.ContinueOnError)
	o.AddFlags(fs)
	var known []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if fs.Lookup(name) != nil {
			known = append(known, strings.ReplaceAll(a, "$(POD_NAMESPACE)", webhook.Namespace))
		} else if strings.Contains(name, "self-signed") || strings.HasSuffix(name, "service-name") {
			t.Errorf("selfcert has no flag %s", name)
		}
	}
	if err := fs.Parse(known); err != nil {
		t.Fatal(err)
	}
	o.CertDir = "/var/run/kvinject/serving-certs"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cacheURL)
	// The trailing dot of the fully qualified name is no part of a certificate's names: Go's
	// TLS client drops it (internal/selfcert tests it).
	if !o.CacheEnabled() || !slices.Contains(o.CacheDNSNames(), strings.TrimSuffix(u.Hostname(), ".")) {
		t.Errorf("the cache's certificate names %v, not %s", o.CacheDNSNames(), u.Hostname())
	}
	if want := "--cache-ca-file=" + path.Join(o.CertDir, selfcert.FileCABundle); !slices.Contains(args, want) {
		t.Errorf("args lack %s", want)
	}
	if len(all[*corev1.Secret](objs)) != 0 || len(all[*unstructured.Unstructured](objs)) != 0 {
		t.Error("the installation ships a Secret or a non-core object")
	}
}

func TestWithCacheCertManager(t *testing.T) {
	objs := objects(t, "with-cache/cert-manager", "")
	certs := map[string]*unstructured.Unstructured{}
	kinds := map[string]int{}
	for _, u := range all[*unstructured.Unstructured](objs) {
		kinds[u.GetKind()]++
		if u.GetKind() == "Certificate" {
			certs[u.GetName()] = u
		}
	}
	if kinds["Certificate"] != 3 || kinds["Issuer"] != 2 || len(kinds) != 2 {
		t.Errorf("cert-manager objects %v, want 2 Issuers and 3 Certificates", kinds)
	}
	cache, webhook := certs["kvinject-cache-cert"], certs["kvinject-webhook-cert"]
	if cache == nil || webhook == nil {
		t.Fatal("no Certificate kvinject-cache-cert or kvinject-webhook-cert")
	}
	if cache.GetNamespace() != "kvinject-system" || cache.GetAPIVersion() != "cert-manager.io/v1" {
		t.Errorf("Certificate %s %s/%s", cache.GetAPIVersion(), cache.GetNamespace(), cache.GetName())
	}
	// The same CA Issuer signs both, so the webhook's Secret's ca.crt (its cert dir) is the CA of
	// the cache's certificate.
	cacheIssuer, _, _ := unstructured.NestedStringMap(cache.Object, "spec", "issuerRef")
	webhookIssuer, _, _ := unstructured.NestedStringMap(webhook.Object, "spec", "issuerRef")
	if diff := cmp.Diff(webhookIssuer, cacheIssuer); diff != "" || cacheIssuer["name"] != "kvinject-ca" {
		t.Errorf("the cache's issuer differs from the webhook's (-webhook +cache):\n%s", diff)
	}
	secretName, _, _ := unstructured.NestedString(cache.Object, "spec", "secretName")
	dns, _, _ := unstructured.NestedStringSlice(cache.Object, "spec", "dnsNames")
	usages, _, _ := unstructured.NestedStringSlice(cache.Object, "spec", "usages")
	if secretName != "kvinject-cache-cert" || !slices.Contains(dns, "kvinject-cache.kvinject-system.svc") || !slices.Contains(usages, "server auth") {
		t.Errorf("cache Certificate: secretName %q dnsNames %v usages %v", secretName, dns, usages)
	}
	d := named[*appsv1.Deployment](t, objs, "kvinject-cache")
	if got := d.Spec.Template.Spec.Volumes[0].Secret.SecretName; got != secretName {
		t.Errorf("the cache mounts %s, cert-manager writes %s", got, secretName)
	}
	w := named[*appsv1.Deployment](t, objs, "kvinject-webhook")
	if v := volume(t, w, "serving-cert"); v.Secret == nil || v.Secret.SecretName != "kvinject-webhook-cert" {
		t.Errorf("the webhook's cert dir %+v is not cert-manager's Secret (whose ca.crt is the CA)", v.VolumeSource)
	}
	if n := len(all[*rbacv1.Role](objs)); n != 0 {
		t.Errorf("%d Roles: the webhook gets no access to Secrets here", n)
	}
}

func TestWithCacheOpenShift(t *testing.T) {
	objs := objects(t, "with-cache/openshift", "")
	svc := named[*corev1.Service](t, objs, "kvinject-cache")
	if got := svc.Annotations["service.beta.openshift.io/serving-cert-secret-name"]; got != "kvinject-cache-cert" {
		t.Errorf("cache Service serving-cert-secret-name %q", got)
	}
	cm := named[*corev1.ConfigMap](t, objs, "kvinject-cache-ca")
	if cm.Namespace != "kvinject-system" || cm.Annotations["service.beta.openshift.io/inject-cabundle"] != "true" || len(cm.Data) != 0 || len(cm.BinaryData) != 0 {
		t.Errorf("ConfigMap %s/%s annotations %v, %d keys: want an empty one the service CA operator fills", cm.Namespace, cm.Name, cm.Annotations, len(cm.Data)+len(cm.BinaryData))
	}
	w := named[*appsv1.Deployment](t, objs, "kvinject-webhook")
	v := volume(t, w, "cache-ca")
	wantVolume := corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
		Items:                []corev1.KeyToPath{{Key: "service-ca.crt", Path: "service-ca.crt"}},
	}}
	if diff := cmp.Diff(wantVolume, v.VolumeSource); diff != "" {
		t.Errorf("webhook's cache-ca volume (-want +got):\n%s", diff)
	}
	if m := mount(t, w.Spec.Template.Spec.Containers[0], "cache-ca"); !m.ReadOnly || m.MountPath+"/service-ca.crt" != "/var/run/kvinject/cache-ca/service-ca.crt" {
		t.Errorf("cache-ca mount %+v", m)
	}
	if got := named[*appsv1.Deployment](t, objs, "kvinject-cache").Spec.Template.Spec.Volumes[0].Secret.SecretName; got != "kvinject-cache-cert" {
		t.Errorf("the cache mounts %s", got)
	}
	if n := len(all[*unstructured.Unstructured](objs)) + len(all[*rbacv1.Role](objs)); n != 0 {
		t.Errorf("%d non-core objects or Roles", n)
	}
}
