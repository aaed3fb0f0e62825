// Command kvstatic serves kvinject's real admission webhook
// (webhook.NewAdmissionWebhook on controller-runtime's webhook server, as
// `kvinject webhook` does) with a static ServiceAccount instead of an API
// server: the admission path alone, without the manager and its informer.
// It exists for the admission benchmark and for CPU profiles of that path.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

type staticSA map[string]string

func (a staticSA) GetServiceAccount(_ context.Context, namespace, name string) (webhook.ServiceAccount, error) {
	return webhook.ServiceAccount{Namespace: namespace, Name: name, Annotations: a}, nil
}

// statusOnly does what the floor does, through controller-runtime.
type statusOnly struct{}

func (statusOnly) Default(_ context.Context, pod *corev1.Pod) error {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[spec.AnnotationStatus] = spec.StatusInjected
	return nil
}

func main() {
	port := flag.Int("port", 19443, "port on 127.0.0.1")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key")
	clientID := flag.String("sa-client-id", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "client id on every ServiceAccount")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here until SIGTERM")
	oneAnnotation := flag.Bool("one-annotation", false, "serve a typed Defaulter that only sets kvinject.io/status instead of kvinject's (the framework's floor)")
	o := webhook.DefaultOptions()
	flag.StringVar(&o.AgentImage, "agent-image", "ghcr.io/kvinject/kvinject:bench", "agent image")
	flag.StringVar(&o.TenantID, "tenant-id", "11111111-2222-3333-4444-555555555555", "tenant id")
	flag.StringVar(&o.DefaultVault, "default-vault", "", "default vault")
	flag.Parse()
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	counter, err := webhook.NewInjectionsCounter(ctrlmetrics.Registry)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{
		Host: "127.0.0.1", Port: *port, CertDir: *certDir, CertName: "tls.crt", KeyName: "tls.key",
	})
	injector := &webhook.PodInjector{Options: &o, ServiceAccounts: staticSA{spec.SAAnnotationClientID: *clientID}}
	if *oneAnnotation {
		srv.Register(webhook.MutatePath, admission.WithDefaulter[*corev1.Pod](scheme, statusOnly{}))
	} else {
		srv.Register(webhook.MutatePath, webhook.NewAdmissionWebhook(scheme, injector, counter))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
