//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/credprovider"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/manifests"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// restartKubelet restarts the node's kubelet (test/cluster/restart-kubelet.sh)
// with args, or as up.sh started it without.
func restartKubelet(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(cluster.Root, "test/cluster/restart-kubelet.sh"), args...)
	cmd.Env = append(os.Environ(), "STATE_DIR="+cluster.StateDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart-kubelet.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// kubeletLogSince is the kubelet's log from offset on.
func kubeletLogSince(t *testing.T, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cluster.StateDir, "logs", "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return string(b[offset:])
}

func kubeletLogSize(t *testing.T) int64 {
	t.Helper()
	st, err := os.Stat(filepath.Join(cluster.StateDir, "logs", "kubelet.log"))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// nodeModePull: a kubelet with KubeletServiceAccountTokenForCredentialProviders
// off (as Kubernetes 1.29 to 1.33 and OpenShift 4.20) sends no token; the
// provider's node mode pulls the reference app's image from the mirror
// (basic auth) with the kvinject-node-identity DaemonSet's token: no
// imagePullSecrets, no Secret, one sign-in of the node identity for many
// pulls. Without its federated credential the pull fails with the
// AADSTS700213 line in the kubelet's log. The kubelet is restored after,
// for the pod-token mode's test. It runs from e2e_test.go, after the tests
// that run the app image as imported into containerd (see TestEnvExecDelivery).
func nodeModePull(t *testing.T) {
	const ns = "e2e-nodepull"
	ctx := context.Background()
	namespace(t, ns, nil)
	_, password, err := cluster.MirrorCredential()
	if err != nil {
		t.Fatal(err)
	}
	planted = append(planted, password)

	// The DaemonSet, with the image built here.
	tag := image[strings.LastIndex(image, ":")+1:]
	y, err := manifests.Render(manifests.NodeIdentity, tag)
	if err != nil {
		t.Fatal(err)
	}
	y = bytes.ReplaceAll(y, []byte("image: "+manifests.ImageName+":"+tag), []byte("image: "+image))
	if _, err := cluster.KubectlOut(ctx, y, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	// Not the Namespace the kustomization also holds: the webhook lives there.
	t.Cleanup(func() {
		_, _ = cluster.KubectlOut(ctx, nil, "-n", harness.KvinjectNS, "delete", "--ignore-not-found", "--wait=false",
			"daemonset/kvinject-node-identity", "serviceaccount/kvinject-node-identity")
	})
	waitFor(t, 2*time.Minute, "the kvinject-node-identity pod running", func() (bool, error) {
		list, err := cluster.Client.CoreV1().Pods(harness.KvinjectNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node-identity"})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && ready(p) {
				return true, nil
			}
		}
		return false, fmt.Errorf("%s", describePods(list.Items))
	})

	// The node identity's federated credential: the DaemonSet's ServiceAccount.
	fc := map[string]any{"clientID": harness.ClientID, "name": "kvinject-node-identity",
		"issuer": cluster.IssuerURL, "subject": credprovider.DefaultNodeTokenSubject, "audiences": []string{spec.TokenAudience}}
	if err := emu.Admin(ctx, "POST", "/federated-credentials", fc, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = emu.Admin(ctx, "POST", "/federated-credentials/delete", map[string]any{"clientID": harness.ClientID, "name": fc["name"]}, nil)
	})

	// The kubelet: node mode for the mirror, the gate off.
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	var cfg bytes.Buffer
	err = credprovider.WriteKubeletConfig(&cfg, credprovider.ConfigOptions{
		TenantID: harness.TenantID, Cloud: cloud, KubeMinor: 33,
		HTTPSProxy: "http://" + cluster.NodeIP + ":" + cluster.EmulatorPort, CAFile: filepath.Join(cluster.StateDir, "emulator", "ca", "ca.crt"),
		Node: &credprovider.NodeConfig{
			ClientID:       harness.ClientID,
			PullSecrets:    []credprovider.NodePullSecret{{Pattern: cluster.Registry, Ref: "https://" + harness.Vault + ".vault.azure.net/secrets/" + harness.MirrorCredentialSecret}},
			KubeletRootDir: filepath.Join(cluster.StateDir, "kubelet"),
			NodeName:       nodeName(t),
			CacheDuration:  credprovider.DefaultNodeCacheDuration,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(cluster.StateDir, "credential-provider", "node-config.yaml")
	if err := os.WriteFile(cfgFile, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	gateOff := []string{"--credential-provider-config", cfgFile, "--feature-gates", "KubeletServiceAccountTokenForCredentialProviders=false"}
	restartKubelet(t, gateOff...)
	t.Cleanup(func() { restartKubelet(t) })
	if err := emu.Admin(ctx, "POST", "/stats/reset", nil, nil); err != nil {
		t.Fatal(err)
	}

	// Three pods, each pulling (Always) from the mirror, none injected, no
	// imagePullSecrets; their ServiceAccount has no federated credential.
	d := dbreader(ns, "pull", 3)
	delete(d.Spec.Template.Labels, spec.LabelInject)
	d.Spec.Template.Annotations = nil
	c := &d.Spec.Template.Spec.Containers[0]
	c.Image, c.ImagePullPolicy, c.Args = mirrorImage, corev1.PullAlways, []string{"--files", ""}
	create(t, d)
	for _, p := range waitRunning(t, ns, "pull", 3) {
		if len(p.Spec.ImagePullSecrets) != 0 {
			t.Errorf("pod %s has imagePullSecrets %v", p.Name, p.Spec.ImagePullSecrets)
		}
	}
	// More pulls: the pods replaced, each new one pulling again.
	if err := cluster.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app=pull"}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "pull", 3)
	var stats struct {
		SignIns map[string]int64 `json:"signIns"`
	}
	if err := emu.Admin(ctx, "GET", "/stats", nil, &stats); err != nil {
		t.Fatal(err)
	}
	key := harness.ClientID + " " + credprovider.DefaultNodeTokenSubject
	if n := stats.SignIns[key]; n != 1 {
		t.Errorf("the node identity signed in %d times for 6 pulls, want once per token lifetime (sign-ins %v)", n, stats.SignIns)
	}
	if list, err := cluster.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) != 0 {
		names := []string{}
		if list != nil {
			for _, s := range list.Items {
				names = append(names, s.Namespace+"/"+s.Name)
			}
		}
		t.Logf("Secrets in the cluster (the webhook's and cache's serving certificates): %v %v", names, err)
		for _, n := range names {
			if strings.HasPrefix(n, ns+"/") {
				t.Errorf("Secret %s in the pulling namespace", n)
			}
		}
	}

	// Without the federated credential, a kubelet with an empty cache
	// fails the pull and logs what to fix.
	if err := emu.Admin(ctx, "POST", "/federated-credentials/delete", map[string]any{"clientID": harness.ClientID, "name": fc["name"]}, nil); err != nil {
		t.Fatal(err)
	}
	offset := kubeletLogSize(t)
	restartKubelet(t, gateOff...)
	d = d.DeepCopy()
	d.Name, d.Spec.Replicas = "nofed", ptrInt32(1)
	d.Spec.Selector.MatchLabels["app"], d.Spec.Template.Labels["app"] = "nofed", "nofed"
	create(t, d)
	waitFor(t, 2*time.Minute, "the nofed pod in ErrImagePull or ImagePullBackOff", func() (bool, error) {
		for _, p := range pods(t, ns, "nofed") {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
					return true, nil
				}
				if cs.State.Running != nil {
					return false, fmt.Errorf("the nofed pod runs without the node identity's federated credential")
				}
			}
		}
		return false, nil
	})
	var line string
	for _, l := range strings.Split(kubeletLogSince(t, offset), "\n") {
		if strings.Contains(l, "AADSTS700213") && strings.Contains(l, "node identity ServiceAccount kvinject-system/kvinject-node-identity") &&
			strings.Contains(l, "--subject") && strings.Contains(l, credprovider.DefaultNodeTokenSubject) {
			line = l
		}
	}
	if line == "" {
		t.Error("the kubelet log has no AADSTS700213 line naming the node identity's subject")
	} else {
		t.Logf("kubelet: %s", line)
	}
}

func ptrInt32(v int32) *int32 { return &v }

// nodeName is the node's name (the kubelet runs with --hostname-override).
func nodeName(t *testing.T) string {
	t.Helper()
	list, err := cluster.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("nodes: %v (%d)", err, len(list.Items))
	}
	return list.Items[0].Name
}
