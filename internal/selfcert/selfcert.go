package selfcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Labels on the Secret. A Secret of that name without the managed-by label is left alone.
const (
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "kvinject"
	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
)

// Runnable keeps the self-signed certificate current. It is a manager.Runnable that needs no
// leader election: every replica runs it.
type Runnable struct {
	o *Options
	c client.WithWatch

	mu        sync.Mutex
	served    *x509.Certificate // the serving certificate written to CertDir, once its CA is in the caBundle
	lastError error
	secretRV  string
	configRV  string
}

var (
	_ manager.Runnable               = (*Runnable)(nil)
	_ manager.LeaderElectionRunnable = (*Runnable)(nil)
)

// New makes the Runnable from validated Options, talking to the API server at cfg with its own
// uncached client (it reads one Secret and one webhook configuration, by name).
func New(cfg *rest.Config, o *Options) (*Runnable, error) {
	if !o.validated {
		return nil, errors.New("selfcert: options not validated")
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("selfcert: client: %w", err)
	}
	return &Runnable{o: o, c: c}, nil
}

// NeedLeaderElection is false: replicas agree through the Secret.
func (r *Runnable) NeedLeaderElection() bool { return false }

// EnsureCertificate runs passes until the certificate files are in place and their CA is in
// the caBundle, or ctx ends. Call it before the webhook server starts: the server reads the
// files when it starts.
func (r *Runnable) EnsureCertificate(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("selfcert")
	delay := 500 * time.Millisecond
	for {
		err := r.pass(ctx)
		if err == nil {
			return nil
		}
		log.Error(err, "self-signed certificate not ready yet, retrying", "in", delay.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("self-signed certificate: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// Start keeps the certificate current until ctx ends.
func (r *Runnable) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("selfcert")
	backoff := time.Duration(0)
	for {
		if err := r.pass(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, 500*time.Millisecond), r.o.ResyncInterval)
			log.Error(err, "self-signed certificate pass failed", "retryIn", backoff.String())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		r.waitForChange(ctx)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// ReadyChecker is ready while this replica serves a certificate that is valid now and whose
// CA was in the caBundle when it was written.
func (r *Runnable) ReadyChecker() healthz.Checker {
	return func(*http.Request) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.served == nil {
			if r.lastError != nil {
				return fmt.Errorf("no self-signed certificate yet: %w", r.lastError)
			}
			return errors.New("no self-signed certificate yet")
		}
		if now := r.o.Now(); !now.Before(r.served.NotAfter) {
			return fmt.Errorf("the serving certificate expired at %s and was not renewed (last error: %v)", r.served.NotAfter.UTC().Format(time.RFC3339), r.lastError)
		}
		return nil
	}
}

// pass is one reconciliation: Secret, then caBundle, then files.
func (r *Runnable) pass(ctx context.Context) (err error) {
	defer func() {
		r.mu.Lock()
		r.lastError = err
		r.mu.Unlock()
	}()
	st, err := r.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if err := r.ensureCABundle(ctx, st.bundle); err != nil {
		return err
	}
	if err := r.writeFiles(st.serving); err != nil {
		return err
	}
	r.mu.Lock()
	r.served = st.serving.cert
	r.mu.Unlock()
	return nil
}

func (r *Runnable) secretKey() types.NamespacedName {
	return types.NamespacedName{Namespace: r.o.Namespace, Name: r.o.SecretName}
}

// ensureSecret makes the Secret hold a fresh CA and serving certificate and returns its content.
// Concurrent replicas: create fails with AlreadyExists or update with Conflict for all but one;
// they re-read and use the winner's.
func (r *Runnable) ensureSecret(ctx context.Context) (*state, error) {
	log := ctrl.LoggerFrom(ctx).WithName("selfcert")
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return nil, fmt.Errorf("secret %s keeps changing under us", r.secretKey())
		}
		var s corev1.Secret
		err := r.c.Get(ctx, r.secretKey(), &s)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get secret %s: %w", r.secretKey(), err)
		}
		if exists && s.Labels[labelManagedBy] != managedBy {
			return nil, fmt.Errorf("secret %s exists but is not managed by kvinject (no label %s=%s): delete it (e.g. left over from another certificate overlay) or choose another --self-signed-cert-secret",
				r.secretKey(), labelManagedBy, managedBy)
		}
		st, reasons, err := plan(s.Data, r.o, r.o.Now())
		if err != nil {
			return nil, err
		}
		if exists && len(reasons) == 0 {
			r.setSecretRV(s.ResourceVersion)
			return st, nil
		}
		if !exists {
			s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.o.Namespace, Name: r.o.SecretName}, Type: corev1.SecretTypeTLS}
		}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[labelManagedBy] = managedBy
		s.Labels[labelName] = "kvinject"
		s.Labels[labelComponent] = "webhook-cert"
		s.Data = st.data()
		if !exists {
			err = r.c.Create(ctx, &s)
		} else {
			err = r.c.Update(ctx, &s) // carries the resourceVersion we read: optimistic concurrency
		}
		switch {
		case err == nil:
			log.Info("wrote the self-signed certificate secret", "secret", r.secretKey().String(),
				"reasons", strings.Join(reasons, "; "), "caNotAfter", st.ca.cert.NotAfter, "certNotAfter", st.serving.cert.NotAfter)
			r.setSecretRV(s.ResourceVersion)
			return st, nil
		case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
			log.V(1).Info("another replica wrote the secret first; re-reading", "secret", r.secretKey().String())
			continue
		default:
			return nil, fmt.Errorf("write secret %s: %w", r.secretKey(), err)
		}
	}
}

// ensureCABundle patches every webhook of the configuration whose caBundle differs from the
// wanted one, with the resourceVersion just read as a precondition.
func (r *Runnable) ensureCABundle(ctx context.Context, ours []*x509.Certificate) error {
	log := ctrl.LoggerFrom(ctx).WithName("selfcert")
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return fmt.Errorf("mutatingwebhookconfiguration %s keeps changing under us", r.o.WebhookConfigName)
		}
		var cfg admissionregistrationv1.MutatingWebhookConfiguration
		if err := r.c.Get(ctx, types.NamespacedName{Name: r.o.WebhookConfigName}, &cfg); err != nil {
			return fmt.Errorf("get mutatingwebhookconfiguration %s: %w", r.o.WebhookConfigName, err)
		}
		if len(cfg.Webhooks) == 0 {
			return fmt.Errorf("mutatingwebhookconfiguration %s has no webhooks", r.o.WebhookConfigName)
		}
		now := r.o.Now()
		type hook struct {
			Name         string         `json:"name"`
			ClientConfig map[string]any `json:"clientConfig"`
		}
		var hooks []hook
		for _, w := range cfg.Webhooks {
			want := caBundleFor(ours, w.ClientConfig.CABundle, now)
			if !bytes.Equal(want, w.ClientConfig.CABundle) {
				hooks = append(hooks, hook{Name: w.Name, ClientConfig: map[string]any{"caBundle": want}})
			}
		}
		if len(hooks) == 0 {
			r.setConfigRV(cfg.ResourceVersion)
			return nil
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": cfg.ResourceVersion},
			"webhooks": hooks,
		})
		if err != nil {
			return err
		}
		err = r.c.Patch(ctx, &cfg, client.RawPatch(types.StrategicMergePatchType, patch))
		switch {
		case err == nil:
			log.Info("updated the caBundle", "mutatingwebhookconfiguration", r.o.WebhookConfigName, "webhooks", len(hooks))
			r.setConfigRV(cfg.ResourceVersion)
			return nil
		case apierrors.IsConflict(err):
			continue
		default:
			return fmt.Errorf("patch caBundle of mutatingwebhookconfiguration %s: %w", r.o.WebhookConfigName, err)
		}
	}
}

// writeFiles puts tls.key, then tls.crt into CertDir when they differ, each by an atomic
// rename (certwatcher reloads on each; a key without its certificate fails to load and keeps
// the previous pair until the certificate follows).
func (r *Runnable) writeFiles(kp keyPair) error {
	if err := os.MkdirAll(r.o.CertDir, 0o700); err != nil {
		return fmt.Errorf("cert dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{KeyTLSKey, kp.keyPEM}, {KeyTLSCert, kp.certPEM}} {
		p := filepath.Join(r.o.CertDir, f.name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		tmp, err := os.CreateTemp(r.o.CertDir, "."+f.name+".*")
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		_, werr := tmp.Write(f.data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Rename(tmp.Name(), p); err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

func (r *Runnable) setSecretRV(rv string) { r.mu.Lock(); r.secretRV = rv; r.mu.Unlock() }
func (r *Runnable) setConfigRV(rv string) { r.mu.Lock(); r.configRV = rv; r.mu.Unlock() }

// waitForChange returns when the Secret or the webhook configuration changes after what the
// last pass saw, when a renewal may be due, or after the resync interval.
func (r *Runnable) waitForChange(ctx context.Context) {
	r.mu.Lock()
	secretRV, configRV := r.secretRV, r.configRV
	wait := r.o.ResyncInterval
	if r.served != nil {
		// Wake up for the serving certificate's renewal (the CA's comes earlier than its
		// certificates' ends, and a new CA also renews the certificate).
		if d := renewAt(r.served).Sub(r.o.Now()); d < wait {
			wait = max(d, 10*time.Millisecond)
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()

	secretW := r.watch(ctx, &corev1.SecretList{}, r.o.Namespace, r.o.SecretName, secretRV)
	configW := r.watch(ctx, &admissionregistrationv1.MutatingWebhookConfigurationList{}, "", r.o.WebhookConfigName, configRV)
	defer secretW.Stop()
	defer configW.Stop()
	select {
	case <-ctx.Done():
	case <-secretW.ResultChan():
	case <-configW.ResultChan():
	}
}

// watch watches one object by name from resourceVersion rv; on error it returns a watcher that
// never fires (the resync timer still runs).
func (r *Runnable) watch(ctx context.Context, list client.ObjectList, namespace, name, rv string) watch.Interface {
	opts := []client.ListOption{client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)}}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	raw := &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: false}
	opts = append(opts, &client.ListOptions{Raw: raw})
	w, err := r.c.Watch(ctx, list, opts...)
	if err != nil {
		ctrl.LoggerFrom(ctx).WithName("selfcert").V(1).Info("watch failed; relying on resync", "name", name, "error", err.Error())
		return watch.NewFake() // never fires
	}
	return w
}
