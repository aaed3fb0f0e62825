package webhookserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kvinject/kvinject/internal/selfcert"
	"github.com/kvinject/kvinject/internal/serving"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// ServerOptions configure `kvinject webhook`.
type ServerOptions struct {
	// Mutation's CacheCAFile, when set, is read again every
	// CacheCAInterval while the webhook serves, which admits with the new
	// bundle once it is valid.
	Mutation webhook.Options
	// Port and CertDir (tls.crt, tls.key, reloaded on change) of the webhook server.
	Port    int
	CertDir string
	// Host to bind the webhook server to; empty means all addresses.
	Host string
	// MetricsAddr serves /metrics over HTTPS (the webhook's certificate) to
	// callers whose bearer token passes a TokenReview and whose identity may
	// get the /metrics URL (SubjectAccessReview); "0" disables it.
	// ProbeAddr serves /healthz and /readyz over plain HTTP to the kubelet.
	MetricsAddr string
	ProbeAddr   string
	// Kubeconfig is an explicit kubeconfig path; else KUBECONFIG, else in-cluster.
	Kubeconfig string
	// SelfSigned, when set, makes the webhook make, rotate and serve its own certificate in
	// CertDir and keep its webhook configuration's caBundle current (internal/selfcert).
	SelfSigned *selfcert.Options
}

// DefaultServerOptions are the webhook server's defaults, before flags.
func DefaultServerOptions() ServerOptions {
	return ServerOptions{
		Mutation:    webhook.DefaultOptions(),
		Port:        9443,
		CertDir:     "/tmp/k8s-webhook-server/serving-certs",
		MetricsAddr: ":8443",
		ProbeAddr:   ":8081",
	}
}

// Complete fills in the defaults and derives what the webhook needs, the
// mutation's included.
func (o *ServerOptions) Complete() {
	o.Mutation.Complete()
	if o.SelfSigned != nil {
		o.SelfSigned.CertDir = o.CertDir
		o.SelfSigned.Complete()
	}
}

// Validate reports every problem of completed options at once; it
// changes nothing.
func (o *ServerOptions) Validate() error {
	var errs []error
	if err := o.Mutation.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Port <= 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not a port", o.Port))
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is empty"))
	}
	if o.SelfSigned != nil {
		if err := o.SelfSigned.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServerVersion asks the API server for its version ("v1.33.5").
func ServerVersion(cfg *rest.Config) (string, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("API server version: %w", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return "", fmt.Errorf("API server version: %w", err)
	}
	return info.GitVersion, nil
}

// EnsureSelfSigned makes the self-signed certificates and writes their
// files into o.CertDir (tls.crt, tls.key and the CA bundle ca.crt) before
// the options are validated: --cache-ca-file may name that ca.crt, which
// does not exist until then. Serve checks them again.
func EnsureSelfSigned(ctx context.Context, o ServerOptions, cfg *rest.Config) error {
	if o.SelfSigned == nil {
		return nil
	}
	so := *o.SelfSigned
	so.CertDir = o.CertDir
	so.Complete()
	if err := so.Validate(); err != nil {
		return err
	}
	certs, err := selfcert.New(cfg, &so)
	if err != nil {
		return err
	}
	return certs.EnsureCertificate(ctx)
}

// Serve runs the webhook server until ctx ends.
func Serve(ctx context.Context, o ServerOptions, cfg *rest.Config) error {
	// The types the webhook reads: ServiceAccounts' metadata and Nodes.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return fmt.Errorf("build scheme: %w", err)
	}
	saMeta := newServiceAccountMetadata()
	mo := serving.ManagerOptions(serving.Addresses{Host: o.Host, Port: o.Port, CertDir: o.CertDir, MetricsAddr: o.MetricsAddr, ProbeAddr: o.ProbeAddr}, scheme)
	mo.Cache = cache.Options{
		// Only ServiceAccounts' metadata is read; keep no managed fields.
		DefaultTransform: cache.TransformStripManagedFields(),
		// The handler only reads a ServiceAccount's annotations and
		// never changes them: no copy per admission.
		ByObject: map[client.Object]cache.ByObject{
			saMeta: {UnsafeDisableDeepCopy: ptr.To(true)},
			// Nodes only for their kubelet versions (the auto env delivery).
			&corev1.Node{}: {Transform: stripNode},
		},
	}
	mgr, err := manager.New(cfg, mo)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	// Start the ServiceAccount informer with the manager, not at the first pod.
	saInformer, err := mgr.GetCache().GetInformer(ctx, saMeta)
	if err != nil {
		return fmt.Errorf("watch service accounts: %w", err)
	}
	counter, err := NewInjectionsCounter(ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	options := &atomic.Pointer[webhook.Options]{}
	options.Store(&o.Mutation)
	if o.Mutation.EnvDelivery == spec.DeliveryAuto {
		// Until proven, fileKeyRef could be dropped: the exec wrapper.
		options.Store(o.Mutation.WithCluster(webhook.Cluster{}))
		nodeInformer, err := mgr.GetCache().GetInformer(ctx, &corev1.Node{})
		if err != nil {
			return fmt.Errorf("watch nodes: %w", err)
		}
		w := &ClusterWatcher{Options: options, Nodes: mgr.GetClient(), Interval: EnvFilesInterval,
			EnvFiles: func(ctx context.Context) (bool, error) { return EnvFilesEnabled(ctx, cfg) }}
		if err := w.Watch(nodeInformer); err != nil {
			return fmt.Errorf("watch nodes: %w", err)
		}
		if err := mgr.Add(w); err != nil {
			return fmt.Errorf("add the env delivery watcher: %w", err)
		}
		if err := mgr.AddReadyzCheck("env-delivery", w.ReadyChecker); err != nil {
			return fmt.Errorf("add readyz check: %w", err)
		}
	}
	srv := mgr.GetWebhookServer()
	srv.Register(MutatePath, &PodHandler{
		Options:         options,
		ServiceAccounts: ClusterServiceAccounts{Cache: mgr.GetClient(), Live: mgr.GetAPIReader()},
		Counter:         counter,
		Log:             ctrllog.FromContext(ctx).WithName("admission"),
	})

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("serviceaccounts-synced", func(*http.Request) error {
		if !saInformer.HasSynced() {
			return errors.New("ServiceAccount cache not synced yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	if o.SelfSigned != nil {
		certs, err := selfcert.New(cfg, o.SelfSigned)
		if err != nil {
			return err
		}
		// The webhook server loads the files when it starts: make them first.
		if err := certs.EnsureCertificate(ctx); err != nil {
			return err
		}
		if err := mgr.Add(certs); err != nil {
			return fmt.Errorf("add self-signed certificate: %w", err)
		}
		if err := mgr.AddReadyzCheck("self-signed-cert", certs.ReadyChecker()); err != nil {
			return fmt.Errorf("add readyz check: %w", err)
		}
	}
	ctrllog.FromContext(ctx).Info("starting kvinject webhook", "port", strconv.Itoa(o.Port), "path", MutatePath,
		"agentImage", o.Mutation.AgentImage, "cloud", o.Mutation.Cloud.Name, "cacheURL", o.Mutation.CacheURL, "cacheByDefault", o.Mutation.CacheByDefault)
	if o.Mutation.CacheCAFile != "" {
		watchCtx, stop := context.WithCancel(logr.NewContext(ctx, ctrllog.FromContext(ctx).WithName("cache-ca")))
		defer stop()
		go watchCacheCA(watchCtx, o.Mutation.CacheCAFile, CacheCAInterval, options)
	}
	return mgr.Start(ctx)
}
