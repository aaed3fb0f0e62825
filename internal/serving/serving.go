// Package serving sets up what kvinject's in-cluster servers (the webhook
// and the cache) share: HTTPS with tls.crt and tls.key from a directory,
// reloaded when they change, TLS 1.2 at least; /metrics over HTTPS for
// bearer tokens that pass a TokenReview and may get /metrics; /healthz and
// /readyz over plain HTTP for the kubelet; a graceful stop.
package serving

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Addresses are where a server listens.
type Addresses struct {
	// Host and Port of the HTTPS server; an empty Host means every address.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key, for the server and /metrics.
	CertDir string
	// MetricsAddr serves /metrics ("0" disables it); ProbeAddr the probes.
	MetricsAddr, ProbeAddr string
}

// MinTLS sets the lowest TLS version explicitly: 1.2, which every supported
// API server and agent speaks. Go's servers choose 1.3 whenever the client
// offers it.
func MinTLS(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }

// ManagerOptions are a controller-runtime manager's options for a server
// at a: its HTTPS server (the manager's webhook server, on which handlers
// of any path can be registered), metrics and probes.
func ManagerOptions(a Addresses, scheme *runtime.Scheme) manager.Options {
	return manager.Options{
		Scheme: scheme,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host: a.Host, Port: a.Port, CertDir: a.CertDir, CertName: "tls.crt", KeyName: "tls.key",
			TLSOpts: []func(*tls.Config){MinTLS},
		}),
		Metrics: metricsserver.Options{
			BindAddress:    a.MetricsAddr,
			SecureServing:  true,
			FilterProvider: MetricsAuth,
			CertDir:        a.CertDir, CertName: "tls.crt", KeyName: "tls.key",
			TLSOpts: []func(*tls.Config){MinTLS},
		},
		HealthProbeBindAddress:  a.ProbeAddr,
		GracefulShutdownTimeout: ptr.To(25 * time.Second),
	}
}

// Logger is the JSON logger of the in-cluster servers on w, debug when
// verbose, set for controller-runtime and carried by the returned context.
func Logger(ctx context.Context, w io.Writer, verbose bool) (context.Context, logr.Logger) {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := logr.FromSlogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	ctrllog.SetLogger(log)
	return logr.NewContext(ctx, log), log
}

// RestConfig finds the API server: the kubeconfig file named, else
// KUBECONFIG, else the in-cluster config.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("find the API server (--kubeconfig, KUBECONFIG or in-cluster): %w", err)
	}
	return cfg, nil
}
