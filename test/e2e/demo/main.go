// Command demo is `make demo`: on a fresh machine it builds and starts the
// local cluster, the Entra ID and Key Vault emulator and kvinject, applies the
// reference setup's DB credential reader moved to injection, and shows what
// happened: the mutated pod, the agent's log, the app's output, the count of
// Kubernetes Secrets (zero) and how long each step took. The cluster stays up.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/test/e2e/harness"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

type timer struct{ steps []string }

func (t *timer) step(name string, f func() error) error {
	fmt.Printf("\n==> %s\n", name)
	start := time.Now()
	err := f()
	d := time.Since(start).Round(100 * time.Millisecond)
	t.steps = append(t.steps, fmt.Sprintf("  %-66s %8s", name, d))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("    done in %s\n", d)
	return nil
}

func run(ctx context.Context) error {
	root, err := k8stest.FindRoot()
	if err != nil {
		return err
	}
	logPath := filepath.Join(root, "_out", "demo.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Printf("kvinject demo (build and tool output: %s)\n", logPath)

	var t timer
	var c *harness.Cluster
	var emu *harness.Emulator
	var image, mirrorImage string
	since := time.Now()         // pods of this run start after it
	pods := map[string]string{} // app -> the running pod of this run
	const ns = "group1"
	steps := []struct {
		name string
		f    func() error
	}{
		{"Build Kubernetes from the Go module proxy (cached in bin/)", func() error {
			return harness.RunLogged(ctx, root, log, "test/cluster/build-binaries.sh")
		}},
		{"Start the local cluster (etcd, apiserver, kubelet on containerd)", func() error {
			if err := harness.RunLogged(ctx, root, log, "test/cluster/up.sh"); err != nil {
				return err
			}
			c, err = harness.Open(root)
			return err
		}},
		{"Build the kvinject and app images; kvinject into containerd, the app into the mirror registry", func() error {
			if image, _, err = c.BuildImages(ctx, "demo", log); err != nil {
				return err
			}
			mirrorImage, err = c.MirrorDBReader(ctx, "demo", log)
			if err == nil {
				fmt.Printf("    %s (TLS, basic auth; the credential only in Key Vault, as %s)\n", mirrorImage, harness.MirrorCredentialSecret)
			}
			return err
		}},
		{"Start the Entra ID + Key Vault emulator (the agents' HTTPS_PROXY)", func() error {
			cfg, err := c.EmulatorConfig([]harness.Subject{{Namespace: ns, ServiceAccount: "dbreader"}})
			if err != nil {
				return err
			}
			emu, err = c.StartEmulator(ctx, filepath.Join(root, "bin/kvinject"), cfg)
			if err == nil {
				fmt.Printf("    proxy %s, issuer trusted: %s\n", emu.ProxyURL, c.IssuerURL)
			}
			return err
		}},
		{"Deploy kvinject (manifests/overlays/self-signed)", func() error {
			return c.Deploy(ctx, image, emu)
		}},
		{"Apply the DB reader (manifests/examples/dbreaderapp)", func() error {
			if err := c.AppNamespace(ctx, ns, nil, emu); err != nil {
				return err
			}
			if err := c.ApplyDBReader(ctx, mirrorImage); err != nil {
				return err
			}
			// On a second run the Deployments are unchanged: start fresh pods
			// so the demo shows this run's injection.
			_, err := c.KubectlOut(ctx, nil, "-n", ns, "rollout", "restart", "deployment/dbreaderapp", "deployment/dbreaderapp-files")
			return err
		}},
		{"Wait for the app to run (env variables, and files)", func() error {
			for _, app := range []string{"dbreaderapp", "dbreaderapp-files"} {
				p, err := readyPod(ctx, c, ns, app, since)
				if err != nil {
					return err
				}
				pods[app] = p
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := t.step(s.name, s.f); err != nil {
			return err
		}
	}

	section := func(title string, b []byte, err error) {
		fmt.Printf("\n---- %s\n", title)
		if err != nil {
			fmt.Printf("(%v)\n", err)
		}
		fmt.Print(string(b))
	}
	for _, app := range []struct{ name, how string }{
		{"dbreaderapp", "the reference Deployment as it was: USERNAME and PASSWORD env entries, now from Key Vault"},
		{"dbreaderapp-files", "the same app reading files"},
	} {
		pod := pods[app.name]
		fmt.Printf("\n==== %s: %s\n", app.name, app.how)
		b, err := c.KubectlOut(ctx, nil, "-n", ns, "get", "pod", pod, "-o",
			"jsonpath={.metadata.annotations.kvinject\\.io/status}{'\\n'}{range .spec.initContainers[*]}init container {.name}: {.image} {.args}{'\\n'}{end}{range .spec.volumes[*]}volume {.name}: {.emptyDir}{.projected.sources[*].serviceAccountToken}{'\\n'}{end}{range .spec.containers[*]}container {.name}: mounts {.volumeMounts}{'\\n'}{range .env[*]}  env {.name}: {.valueFrom}{'\\n'}{end}{end}")
		section("The pod as the webhook admitted it (kubectl get pod "+pod+" -o yaml for all of it)", b, err)
		b, err = c.KubectlOut(ctx, nil, "-n", ns, "get", "pod", pod, "-o",
			"jsonpath=image {.spec.containers[0].image}, imagePullPolicy {.spec.containers[0].imagePullPolicy}, imagePullSecrets: [{.spec.imagePullSecrets}]{'\\n'}pulled {.status.containerStatuses[0].imageID}{'\\n'}")
		section("The image, pulled from the mirror by kvinject-credential-provider with the pod's own token (no pull Secret)", b, err)
		b, err = c.KubectlOut(ctx, nil, "-n", ns, "logs", pod, "-c", "kvinject-agent")
		section("The agent's log (kubectl logs "+pod+" -c kvinject-agent)", b, err)
		b, err = c.KubectlOut(ctx, nil, "-n", ns, "logs", pod, "-c", "secret-reader")
		section("The app's output (kubectl logs "+pod+")", b, err)
	}
	secrets, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("\n---- Kubernetes Secrets in namespace %s: %d\n", ns, len(secrets.Items))
	// Cluster-wide: no registry credential and no Key Vault value; what is
	// there is named, with its type.
	all, err := c.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("---- Kubernetes Secrets in the whole cluster: %d\n", len(all.Items))
	for _, sec := range all.Items {
		what := ""
		switch {
		case sec.Namespace == harness.KvinjectNS && sec.Name == harness.WebhookCertSecret:
			what = " (the webhook's own serving certificate)"
		case sec.Namespace == harness.KvinjectNS && sec.Type == corev1.SecretTypeTLS:
			what = " (the cluster cache's serving certificate)"
		}
		fmt.Printf("    %s/%s, type %s%s\n", sec.Namespace, sec.Name, sec.Type, what)
		if sec.Type == corev1.SecretTypeDockerConfigJson || sec.Type == corev1.SecretTypeDockercfg {
			return fmt.Errorf("the Secret %s/%s holds a registry credential", sec.Namespace, sec.Name)
		}
	}

	fmt.Printf("\n---- Steps\n%s\n", strings.Join(t.steps, "\n"))
	fmt.Printf("\nThe cluster is up. Explore it with:\n  export KUBECONFIG=%s\n  %s get pods -A\n", c.Kubeconfig, c.Kubectl)
	fmt.Printf("Tear it down with:\n  make cluster-down\n")
	return nil
}

// readyPod waits for a Ready pod of app created after since (a second run
// restarts the Deployments; their old pods may still be there) and returns
// its name.
func readyPod(ctx context.Context, c *harness.Cluster, ns, app string, since time.Time) (string, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return "", err
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil || p.CreationTimestamp.Time.Before(since.Truncate(time.Second)) {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return p.Name, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no Ready pod of %s/%s after 3m: kubectl -n %s describe pods -l app=%s", ns, app, ns, app)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
