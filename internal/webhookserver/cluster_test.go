package webhookserver

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/k8stest"
	"github.com/kvinject/kvinject/webhook"
)

func TestEnvFilesInMetrics(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"# HELP x\nkubernetes_feature_enabled{name=\"EnvFiles\",stage=\"BETA\"} 1\n", true},
		{"kubernetes_feature_enabled{name=\"EnvFiles\",stage=\"BETA\"} 0\n", false},
		{"kubernetes_feature_enabled{name=\"Other\",stage=\"\"} 1\n", false},
		{"", false},
	} {
		got, err := envFilesInMetrics(strings.NewReader(tc.text))
		if err != nil || got != tc.want {
			t.Errorf("%q: %v %v, want %v", tc.text, got, err, tc.want)
		}
	}
}

func TestOldKubelets(t *testing.T) {
	t.Parallel()
	node := func(name, v string) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: v}}}
	}
	got := oldKubelets([]corev1.Node{node("c", "v1.34.3"), node("a", "v1.35.0"), node("b", "garbage"), node("d", "v1.37.2+k3s1")})
	if diff := cmp.Diff([]string{"b", "c"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestAutoDeliveryFollowsNodes: with a real API server, the auto delivery
// turns to the exec wrapper while a Node reports a kubelet v1.34.x and
// back to fileKeyRef once it is gone; the gate is read from the API
// server's own /metrics.
func TestAutoDeliveryFollowsNodes(t *testing.T) {
	cfg := k8stest.Start(t, &envtest.Environment{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	on, err := EnvFilesEnabled(ctx, cfg)
	if err != nil || !on {
		t.Fatalf("EnvFilesEnabled = %v, %v: want the gate on in a 1.37 API server", on, err)
	}

	o := webhook.DefaultOptions()
	o.AgentImage, o.TenantID = "kvinject:test", testTenant
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	options := &atomic.Pointer[webhook.Options]{}
	options.Store(o.WithCluster(webhook.Cluster{}))
	c, err := cache.New(cfg, cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Node{}: {Transform: stripNode}}})
	if err != nil {
		t.Fatal(err)
	}
	informer, err := c.GetInformer(ctx, &corev1.Node{})
	if err != nil {
		t.Fatal(err)
	}
	w := &ClusterWatcher{Options: options, Nodes: c, Interval: time.Hour,
		EnvFiles: func(ctx context.Context) (bool, error) { return EnvFilesEnabled(ctx, cfg) }}
	if err := w.Watch(informer); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache not synced")
	}
	go func() { _ = w.Start(ctx) }()

	delivery := func() string {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns",
			Annotations: map[string]string{spec.AnnotationEnvPrefix + "PASSWORD": "app-pgsql#password", spec.AnnotationVault: "homelab-kv"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "i", Command: []string{"/app"}}}}}
		if err := webhook.Mutate(pod, webhook.ServiceAccount{Namespace: "ns", Name: "default", Annotations: map[string]string{spec.SAAnnotationClientID: testClientID}}, options.Load()); err != nil {
			t.Fatal(err)
		}
		return pod.Annotations[spec.AnnotationStatusEnv]
	}
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for delivery() != want {
			if time.Now().After(deadline) {
				t.Fatalf("delivery %q, want %q", delivery(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor(spec.DeliveryFileKeyRef)
	if err := w.ReadyChecker(nil); err != nil {
		t.Errorf("not ready after the first look: %v", err)
	}

	cs := kubernetes.NewForConfigOrDie(cfg)
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old-node"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.NodeInfo.KubeletVersion = "v1.34.3"
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(spec.DeliveryExec)
	if err := cs.CoreV1().Nodes().Delete(ctx, "old-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(spec.DeliveryFileKeyRef)
}
