package manifests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kvinject/kvinject/internal/testkit/helmtool"
	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

// The chart's values files for each kustomize directory: the same installation, which
// TestChartMatchesKustomize checks object by object.
var chartEquivalents = []struct{ dir, values string }{
	{"overlays/self-signed", "self-signed-values.yaml"},
	{"overlays/cert-manager", "cert-manager-values.yaml"},
	{"overlays/openshift", "openshift-values.yaml"},
	{"with-cache/self-signed", "with-cache-self-signed-values.yaml"},
	{"with-cache/cert-manager", "with-cache-cert-manager-values.yaml"},
	{"with-cache/openshift", "with-cache-openshift-values.yaml"},
}

// helmLabels are the labels the chart adds to every object's metadata beyond the kustomize
// directories' (which carry app.kubernetes.io/name, component and part-of): Helm's own. They are
// the intended differences between the two, with the Namespace (below).
var helmLabels = []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"}

// helm runs the pinned Helm (go tool helm) from the repository root, with its own empty config.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	root := k8stest.RepoRoot(t)
	home := t.TempDir()
	env := []string{"HELM_CACHE_HOME=" + filepath.Join(home, "cache"), "HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
		"HELM_DATA_HOME=" + filepath.Join(home, "data")}
	return helmtool.Run(context.Background(), root, root, env, args...)
}

// ciValues are the chart's values files under ci/ (the ones chart linters pick up).
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8stest.RepoRoot(t), helmtool.ChartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files under %s/ci: %v", helmtool.ChartDir, err)
	}
	return files
}

// renderChart renders the chart as release kvinject in kvinject-system, with the values file
// (a name under ci/, or "" for the defaults) and extra helm template args.
func renderChart(t *testing.T, values string, extra ...string) []runtime.Object {
	t.Helper()
	args := []string{"template", "kvinject", helmtool.ChartDir, "--namespace", "kvinject-system"}
	if values != "" {
		args = append(args, "--values", filepath.Join(helmtool.ChartDir, "ci", values))
	}
	y, err := helm(t, append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, "chart "+values, y)
}

func TestChartLint(t *testing.T) {
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			if out, err := helm(t, "lint", "--strict", helmtool.ChartDir, "--namespace", "kvinject-system", "--values", f); err != nil {
				t.Errorf("%v\n%s", err, out)
			}
			renderChart(t, filepath.Base(f))
		})
	}
}

// A typo or a wrong type in the values fails with a message naming it.
func TestChartSchema(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"replicaCont=3"}, "additional properties 'replicaCont' not allowed"},
		{[]string{"webhook.replicaCont=3"}, "at '/webhook': additional properties 'replicaCont' not allowed"},
		{[]string{"webhook.replicas=two"}, "at '/webhook/replicas'"},
		{[]string{"certificates.source=vault"}, "at '/certificates/source'"},
		{[]string{"agent.resources.requests.gpu=1"}, "additional properties 'gpu' not allowed"},
		{[]string{"config.tenantID=contoso"}, "at '/config/tenantID'"},
		{[]string{"certificates.source=secret"}, "set certificates.secret.name"},
		{[]string{"cache.byDefault=true"}, "cache.byDefault needs cache.enabled"},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			t.Parallel()
			args := []string{"template", "kvinject", helmtool.ChartDir}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := helm(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}

// One source of truth: the chart with each certificate source's values renders the same objects
// as the kustomize directory of that source, but for helmLabels and the Namespace (Helm installs
// into --namespace and does not own it).
func TestChartMatchesKustomize(t *testing.T) {
	for _, eq := range chartEquivalents {
		t.Run(eq.dir, func(t *testing.T) {
			t.Parallel()
			want := map[string]runtime.Object{}
			for _, o := range objects(t, eq.dir, "") {
				if o.GetObjectKind().GroupVersionKind().Kind == "Namespace" {
					continue
				}
				if _, dup := want[kindName(o)]; dup {
					t.Errorf("%s renders %s twice", eq.dir, kindName(o))
				}
				want[kindName(o)] = o
			}
			got := map[string]runtime.Object{}
			for _, o := range renderChart(t, eq.values, "--skip-tests") {
				m, err := meta(o)
				if err != nil {
					t.Fatal(err)
				}
				labels := m.GetLabels()
				for _, l := range helmLabels {
					if _, ok := labels[l]; !ok {
						t.Errorf("%s lacks the label %s", kindName(o), l)
					}
					delete(labels, l)
				}
				m.SetLabels(labels)
				if _, dup := got[kindName(o)]; dup {
					t.Errorf("the chart renders %s twice", kindName(o))
				}
				got[kindName(o)] = o
			}
			if diff := cmp.Diff(sortedKeys(want), sortedKeys(got)); diff != "" {
				t.Errorf("objects (-kustomize +chart):\n%s", diff)
			}
			for k, w := range want {
				if g, ok := got[k]; ok {
					if diff := cmp.Diff(w, g); diff != "" {
						t.Errorf("%s (-kustomize +chart):\n%s", k, diff)
					}
				}
			}
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Every values file under ci/ names a source the equivalence test covers, or is one of the
// documented others.
func TestChartValuesFilesCovered(t *testing.T) {
	covered := map[string]bool{"full-values.yaml": true, "secret-values.yaml": true, "cert-manager-issuer-values.yaml": true}
	for _, eq := range chartEquivalents {
		covered[eq.values] = true
	}
	for _, f := range ciValues(t) {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s is neither compared with a kustomize directory nor listed as another case", filepath.Base(f))
		}
	}
}

// What the values beyond the certificate source do, on the full example.
func TestChartOptions(t *testing.T) {
	objs := renderChart(t, "full-values.yaml", "--skip-tests")
	webhookDeploy := named[*appsv1.Deployment](t, objs, "kvinject-webhook")
	cacheDeploy := named[*appsv1.Deployment](t, objs, "kvinject-cache")
	ps := webhookDeploy.Spec.Template.Spec
	c := ps.Containers[0]
	const image = "registry.example.com/platform/kvinject:v0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if c.Image != image || cacheDeploy.Spec.Template.Spec.Containers[0].Image != image {
		t.Errorf("image %q", c.Image)
	}
	// The agent from the mirror, the same build.
	if got := envValue(c, "KVINJECT_AGENT_IMAGE"); got != strings.Replace(image, "registry.example.com", "mirror.example.com", 1) {
		t.Errorf("agent image %q", got)
	}
	wantArgs := []string{
		"--cache-by-default", "--tenant-id=11111111-2222-3333-4444-555555555555", "--cloud=AzurePublicCloud", "--default-vault=homelab-kv",
		"--env-delivery=auto", "--agent-https-proxy=http://proxy.example.com:3128", "--agent-no-proxy=.svc,.cluster.local,10.0.0.0/8",
		"--agent-ca-bundle=trusted-ca/ca-bundle.crt", "--secrets-size-limit=8Mi",
		"--agent-cpu-request=20m", "--agent-memory-request=32Mi", "--agent-cpu-limit=1", "--agent-memory-limit=96Mi",
		"--refresh-cpu-request=5m", "--refresh-memory-request=16Mi", "--refresh-cpu-limit=100m", "--refresh-memory-limit=64Mi",
		"--max-injected-cpu=2", "--max-injected-memory=256Mi", "-v", "--self-signed-cert-validity=4380h", "--self-signed-ca-validity=87600h",
	}
	for _, a := range wantArgs {
		if !slices.Contains(c.Args, a) {
			t.Errorf("webhook args lack %q:\n%q", a, c.Args)
		}
	}
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "platform-registry"}}, ps.ImagePullSecrets); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	if ptr := webhookDeploy.Spec.Replicas; ptr == nil || *ptr != 3 || ps.PriorityClassName != "system-cluster-critical" || len(ps.Tolerations) != 1 ||
		ps.NodeSelector["kubernetes.io/os"] != "linux" || len(ps.TopologySpreadConstraints) != 1 {
		t.Errorf("scheduling: replicas %v priority %q tolerations %v nodeSelector %v spread %v", webhookDeploy.Spec.Replicas, ps.PriorityClassName,
			ps.Tolerations, ps.NodeSelector, ps.TopologySpreadConstraints)
	}
	// The cache's egress: the proxy and its CA from the release namespace's ConfigMap.
	cc := cacheDeploy.Spec.Template.Spec.Containers[0]
	if envValue(cc, "HTTPS_PROXY") != "http://proxy.example.com:3128" || envValue(cc, "SSL_CERT_FILE") != "/etc/kvinject/egress-ca/ca-bundle.crt" ||
		!slices.Contains(cc.Args, "--ttl=10m") {
		t.Errorf("cache env %v args %q", cc.Env, cc.Args)
	}
	mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs)
	h := mwc.Webhooks[0]
	wantNS := &metav1.LabelSelector{
		MatchLabels: map[string]string{"kvinject.io/enabled": "true"},
		MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kvinject-system", "kube-system"}},
			{Key: "environment", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"sandbox"}},
		},
	}
	if diff := cmp.Diff(wantNS, h.NamespaceSelector); diff != "" {
		t.Errorf("namespaceSelector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&metav1.LabelSelector{MatchLabels: map[string]string{"kvinject.io/inject": "true"}}, h.ObjectSelector); diff != "" {
		t.Errorf("objectSelector (-want +got):\n%s", diff)
	}
	if len(h.MatchConditions) != 1 || *h.TimeoutSeconds != 10 {
		t.Errorf("matchConditions %v timeout %d", h.MatchConditions, *h.TimeoutSeconds)
	}
	var monitors []string
	for _, u := range all[*unstructured.Unstructured](objs) {
		if u.GetKind() == "ServiceMonitor" {
			monitors = append(monitors, u.GetName())
		}
	}
	if diff := cmp.Diff([]string{"kvinject-cache", "kvinject-webhook"}, monitors, cmpSorted); diff != "" {
		t.Errorf("ServiceMonitors (-want +got):\n%s", diff)
	}
	b := named[*rbacv1.ClusterRoleBinding](t, objs, "kvinject-metrics-reader")
	if b.RoleRef.Name != "kvinject-metrics-reader" || len(b.Subjects) != 1 || b.Subjects[0].Name != "prometheus-k8s" || b.Subjects[0].Namespace != "observability" {
		t.Errorf("metrics reader binding %+v", b)
	}
	checkRBAC(t, objs)
}

var cmpSorted = cmp.Transformer("sorted", func(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
})

// A release of another name installs side by side: every name, the webhook's Service and the
// self-signed flags follow it, and its webhook skips its own namespace.
func TestChartReleaseName(t *testing.T) {
	y, err := helm(t, "template", "other", helmtool.ChartDir, "--namespace", "other-ns", "--set", "cache.enabled=true", "--skip-tests")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decode(t, "release other", y) {
		m, _ := meta(o)
		if !strings.HasPrefix(m.GetName(), "other-kvinject") {
			t.Errorf("%s is not named after the release", kindName(o))
		}
		if ns := m.GetNamespace(); ns != "" && ns != "other-ns" {
			t.Errorf("%s in namespace %s", kindName(o), ns)
		}
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == "other-kvinject-webhook" {
			for _, a := range []string{"--service-name=other-kvinject-webhook", "--webhook-config-name=other-kvinject",
				"--self-signed-cert-secret=other-kvinject-webhook-cert", "--self-signed-cache-secret=other-kvinject-cache-cert",
				"--cache-service-name=other-kvinject-cache", "--cache-url=https://other-kvinject-cache.other-ns.svc.cluster.local."} {
				if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, a) {
					t.Errorf("webhook args lack %q", a)
				}
			}
		}
		if mwc, ok := o.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			h := mwc.Webhooks[0]
			if h.ClientConfig.Service.Name != "other-kvinject-webhook" || h.ClientConfig.Service.Namespace != "other-ns" ||
				!slices.Contains(h.NamespaceSelector.MatchExpressions[0].Values, "other-ns") {
				t.Errorf("webhook %+v", h)
			}
		}
	}
}

// helm test: the check runs in the release namespace as a non-root, read-only, unprivileged Pod
// and may create Pods (dry run) in tests.namespace only.
func TestChartTestHook(t *testing.T) {
	objs := renderChart(t, "", "--show-only", "templates/tests/injection.yaml")
	pod := only[*corev1.Pod](t, objs)
	if pod.Annotations["helm.sh/hook"] != "test" || pod.Namespace != "kvinject-system" {
		t.Errorf("test Pod %s/%s annotations %v", pod.Namespace, pod.Name, pod.Annotations)
	}
	c := pod.Spec.Containers[0]
	if diff := cmp.Diff([]string{"check-injection", "--namespace=default", "--timeout=60s"}, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	role := only[*rbacv1.Role](t, objs)
	if role.Namespace != "default" || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Verbs, []string{"create"}) || !slices.Equal(role.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("test Role %s/%s %+v", role.Namespace, role.Name, role.Rules)
	}
}

// schemaPaths are the dotted paths of every value the schema defines.
func schemaPaths(prefix string, node map[string]any, out *[]string) {
	props, _ := node["properties"].(map[string]any)
	for k, v := range props {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		*out = append(*out, p)
		if child, ok := v.(map[string]any); ok {
			schemaPaths(p, child, out)
		}
	}
}

// schemaValuePaths reads the chart's values.schema.json and names every value
// it defines, dotted (webhook.replicas).
func schemaValuePaths(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, helmtool.ChartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	var paths []string
	schemaPaths("", schema, &paths)
	return paths
}

// docs/install.md's values table and the schema name the same values: every value of the schema is
// in a row (itself or its parent), and every value in a row is in the schema.
func TestChartValuesDocumented(t *testing.T) {
	root := k8stest.RepoRoot(t)
	paths := schemaValuePaths(t, root)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "### Values\n")
	if !ok {
		t.Fatal("docs/install.md has no ### Values section")
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			if len(documented) > 0 {
				break // the end of the table
			}
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range backquoted.FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	inSchema := map[string]bool{}
	for _, p := range paths {
		inSchema[p] = true
		if p == "global" {
			continue // Helm's own
		}
		covered := false
		for q := p; q != ""; {
			if documented[q] {
				covered = true
				break
			}
			i := strings.LastIndex(q, ".")
			if i < 0 {
				break
			}
			q = q[:i]
		}
		// A parent object is covered by its documented children.
		for d := range documented {
			if strings.HasPrefix(d, p+".") {
				covered = true
			}
		}
		if !covered {
			t.Errorf("value %s is not in docs/install.md's table", p)
		}
	}
	for d := range documented {
		if !inSchema[d] {
			t.Errorf("docs/install.md documents %s, which the schema does not know", d)
		}
	}
}

var backquoted = regexp.MustCompile("`([^`]+)`")

// Every values file's rendering, test hook included, is accepted by a real API server (server-side
// apply, dry run), and the Pods of its Deployments pass Pod Security restricted. cert-manager.io and
// monitoring.coreos.com objects are not (no CRDs here).
func TestChartServerSideDryRun(t *testing.T) {
	cfg := apiServer(t)
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	restricted := map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kvinject-system", Labels: restricted}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, sa := range []string{"kvinject-webhook", "kvinject-cache", "kvinject-test"} {
		if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "kvinject-system", Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	apply := func(t *testing.T, obj runtime.Object) {
		t.Helper()
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kvinject-chart-test"), client.ForceOwnership, client.DryRunAll); err != nil {
			t.Errorf("%s %s/%s rejected: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	for _, f := range ciValues(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, o := range renderChart(t, filepath.Base(f)) {
				if u, ok := o.(*unstructured.Unstructured); ok && (u.GroupVersionKind().Group == "cert-manager.io" || u.GroupVersionKind().Group == "monitoring.coreos.com") {
					continue
				}
				apply(t, o)
				if d, ok := o.(*appsv1.Deployment); ok {
					pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
						ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-pod", Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
					apply(t, pod)
				}
			}
		})
	}
}

// The chart's README names values that exist: every backquoted word that starts with one of the
// schema's top-level keys is a value of the schema.
func TestChartReadmeValues(t *testing.T) {
	root := k8stest.RepoRoot(t)
	paths := schemaValuePaths(t, root)
	inSchema, top := map[string]bool{}, map[string]bool{}
	for _, p := range paths {
		inSchema[p] = true
		top[strings.Split(p, ".")[0]] = true
	}
	readme, err := os.ReadFile(filepath.Join(root, helmtool.ChartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Code blocks first: their fences would pair the backquotes wrongly.
	prose := codeBlock.ReplaceAllString(string(readme), "")
	named := 0
	for _, m := range backquoted.FindAllStringSubmatch(prose, -1) {
		v := m[1]
		if !valuePath.MatchString(v) || !top[strings.Split(v, ".")[0]] {
			continue
		}
		named++
		if !inSchema[v] {
			t.Errorf("charts/kvinject/README.md names the value %s, which the schema does not know", v)
		}
	}
	if named < 10 {
		t.Errorf("charts/kvinject/README.md names %d values; the check reads none of its tables", named)
	}
}

var codeBlock = regexp.MustCompile("(?s)```.*?```")

var valuePath = regexp.MustCompile(`^[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)*$`)
