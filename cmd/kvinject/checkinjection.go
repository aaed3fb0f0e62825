package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/internal/spec"
)

// checkIdentity is the made-up identity of the checked pod: admission
// needs one, and a dry run never reaches Entra ID.
const checkIdentity = "00000000-0000-4000-8000-000000000000"

// runCheckInjection creates an opted-in pod as a server-side dry run (the
// admission webhooks run, nothing is stored) and succeeds only when the
// answer is that pod injected: what `helm test` runs.
func runCheckInjection(ctx context.Context, args []string, io stdio) int {
	fs := flag.NewFlagSet("kvinject check-injection", flag.ContinueOnError)
	fs.SetOutput(io.err)
	namespace := fs.String("namespace", "default", "namespace of the checked pod (the webhook must select it; not the webhook's own)")
	timeout := fs.Duration("timeout", time.Minute, "how long to retry while the webhook is not ready")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: KUBECONFIG, else in-cluster)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := serving.RestConfig(*kubeconfig)
	if err != nil {
		fmt.Fprintln(io.err, "kvinject check-injection:", err)
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(io.err, "kvinject check-injection:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for {
		err = checkInjection(ctx, client, *namespace)
		if err == nil {
			fmt.Fprintf(io.out, "an opted-in pod in %s is injected (%s first, %s: %s)\n", *namespace, spec.AgentContainerName, spec.AnnotationStatus, spec.StatusInjected)
			return 0
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(io.err, "kvinject check-injection:", err)
			return 1
		case <-time.After(2 * time.Second):
		}
	}
}

// checkPod is an opted-in pod that passes Pod Security restricted.
func checkPod(namespace string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "kvinject-check-",
			Namespace:    namespace,
			Labels:       map[string]string{spec.LabelInject: "true"},
			Annotations: map[string]string{
				spec.AnnotationClientID:            checkIdentity,
				spec.AnnotationTenantID:            checkIdentity,
				spec.AnnotationVault:               "kvinject-check",
				spec.AnnotationSecretPrefix + "ok": "check",
			},
		},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "kvinject-check.invalid/app:none",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// checkInjection creates checkPod as a dry run and checks what admission
// made of it.
func checkInjection(ctx context.Context, client kubernetes.Interface, namespace string) error {
	got, err := client.CoreV1().Pods(namespace).Create(ctx, checkPod(namespace), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return fmt.Errorf("create an opted-in pod in %s (dry run): %w", namespace, err)
	}
	return injected(got)
}

// injected tells whether an admitted pod carries what the webhook adds.
func injected(p *corev1.Pod) error {
	var errs []error
	if p.Annotations[spec.AnnotationStatus] != spec.StatusInjected {
		errs = append(errs, fmt.Errorf("no annotation %s: %s: is the webhook configuration's namespaceSelector excluding namespace %s?", spec.AnnotationStatus, spec.StatusInjected, p.Namespace))
	}
	if !slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == spec.AgentContainerName }) {
		errs = append(errs, fmt.Errorf("no init container %s", spec.AgentContainerName))
	}
	return errors.Join(errs...)
}
