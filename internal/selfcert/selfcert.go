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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
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

	mu            sync.Mutex
	served        *x509.Certificate // the serving certificate written to CertDir, once its CA is in the caBundle
	lastError     error             // of the webhook's certificate
	secretRV      string
	configRV      string
	cacheServed   *x509.Certificate // the certificate last seen in the cache's Secret
	cacheSecretRV string
}

var (
	_ manager.Runnable               = (*Runnable)(nil)
	_ manager.LeaderElectionRunnable = (*Runnable)(nil)
)

// New makes the Runnable from completed Options, which it validates, talking to the API server
// at cfg with its own uncached client (it reads one Secret and one webhook configuration, by
// name).
func New(cfg *rest.Config, o *Options) (*Runnable, error) {
	if err := o.Validate(); err != nil {
		return nil, err
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
// files when it starts. The cache's certificate is tried once; if that fails, the webhook starts
// all the same and Start keeps trying.
func (r *Runnable) EnsureCertificate(ctx context.Context) error {
	log := ctrllog.FromContext(ctx).WithName("selfcert")
	delay := 500 * time.Millisecond
	for {
		st, err := r.webhookPass(ctx)
		if err == nil {
			if err := r.cachePass(ctx, st); err != nil {
				log.Error(err, "the cache's certificate is not written yet; retrying in the background")
			}
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
	log := ctrllog.FromContext(ctx).WithName("selfcert")
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

// pass is one reconciliation: the webhook's certificate, then the cache's.
func (r *Runnable) pass(ctx context.Context) error {
	st, err := r.webhookPass(ctx)
	if err != nil {
		return err
	}
	return r.cachePass(ctx, st)
}

// webhookPass makes the webhook's certificate current: Secret, then caBundle, then files. It
// returns the Secret's content.
func (r *Runnable) webhookPass(ctx context.Context) (st *state, err error) {
	defer func() {
		r.mu.Lock()
		r.lastError = err
		r.mu.Unlock()
	}()
	st, err = r.ensureSecret(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.ensureCABundle(ctx, st.bundle); err != nil {
		return nil, err
	}
	if err := r.writeFiles(st.serving, encodeCerts(st.bundle)); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.served = st.serving.cert
	r.mu.Unlock()
	return st, nil
}

// cachePass makes the cache's Secret hold a fresh certificate signed by a CA of st's bundle,
// and that bundle. It runs after the files are written, so this replica's ca.crt holds a new CA
// before the cache's certificate can be signed by it. Nothing to do when the cache's
// certificate is off.
func (r *Runnable) cachePass(ctx context.Context, st *state) error {
	if !r.o.CacheEnabled() {
		return nil
	}
	var cs *cacheState
	w, err := r.ensureManagedSecret(ctx, r.o.CacheSecretName, "cache-cert", "--self-signed-cache-secret",
		func(data map[string][]byte) (map[string][]byte, []string, error) {
			var reasons []string
			var err error
			if cs, reasons, err = planCache(data, st, r.o, r.o.Now()); err != nil {
				return nil, nil, err
			}
			return cs.data(), reasons, nil
		})
	if err != nil {
		return err
	}
	if len(w.reasons) != 0 {
		ctrllog.FromContext(ctx).WithName("selfcert").Info("wrote the cache's certificate secret", "secret", r.o.Namespace+"/"+r.o.CacheSecretName,
			"reasons", strings.Join(w.reasons, "; "), "certNotAfter", cs.serving.cert.NotAfter)
	}
	r.mu.Lock()
	r.cacheSecretRV, r.cacheServed = w.rv, cs.serving.cert
	r.mu.Unlock()
	return nil
}

// ensureSecret makes the Secret hold a fresh CA and serving certificate and returns its content.
func (r *Runnable) ensureSecret(ctx context.Context) (*state, error) {
	var st *state
	w, err := r.ensureManagedSecret(ctx, r.o.SecretName, "webhook-cert", "--self-signed-cert-secret",
		func(data map[string][]byte) (map[string][]byte, []string, error) {
			var reasons []string
			var err error
			if st, reasons, err = plan(data, r.o, r.o.Now()); err != nil {
				return nil, nil, err
			}
			return st.data(), reasons, nil
		})
	if err != nil {
		return nil, err
	}
	if len(w.reasons) != 0 {
		ctrllog.FromContext(ctx).WithName("selfcert").Info("wrote the self-signed certificate secret", "secret", r.o.Namespace+"/"+r.o.SecretName,
			"reasons", strings.Join(w.reasons, "; "), "caNotAfter", st.ca.cert.NotAfter, "certNotAfter", st.serving.cert.NotAfter)
	}
	r.setSecretRV(w.rv)
	return st, nil
}

// secretWrite is what ensureManagedSecret did: the Secret's resourceVersion afterwards, and why
// it wrote it (none: it was up to date).
type secretWrite struct {
	rv      string
	reasons []string
}

// ensureManagedSecret makes the Secret name (type kubernetes.io/tls, in the namespace) hold what
// want computes from its current data (nil when there is none); want also says why that differs
// (nothing: keep it). A Secret without the managed-by label is never written: flagName names
// the flag to change instead. Concurrent replicas: create fails with AlreadyExists or update
// with Conflict for all but one; they re-read and use the winner's.
func (r *Runnable) ensureManagedSecret(ctx context.Context, name, component, flagName string,
	want func(data map[string][]byte) (map[string][]byte, []string, error)) (secretWrite, error) {
	log := ctrllog.FromContext(ctx).WithName("selfcert")
	key := types.NamespacedName{Namespace: r.o.Namespace, Name: name}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return secretWrite{}, fmt.Errorf("secret %s keeps changing under us", key)
		}
		var s corev1.Secret
		err := r.c.Get(ctx, key, &s)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return secretWrite{}, fmt.Errorf("get secret %s: %w", key, err)
		}
		if exists && s.Labels[labelManagedBy] != managedBy {
			return secretWrite{}, fmt.Errorf("secret %s exists but is not managed by kvinject (no label %s=%s): delete it (e.g. left over from another certificate overlay) or choose another %s",
				key, labelManagedBy, managedBy, flagName)
		}
		data, reasons, err := want(s.Data)
		if err != nil {
			return secretWrite{}, err
		}
		if exists && len(reasons) == 0 {
			return secretWrite{rv: s.ResourceVersion}, nil
		}
		if !exists {
			s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Type: corev1.SecretTypeTLS}
		}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[labelManagedBy] = managedBy
		s.Labels[labelName] = "kvinject"
		s.Labels[labelComponent] = component
		s.Data = data
		if !exists {
			err = r.c.Create(ctx, &s)
		} else {
			err = r.c.Update(ctx, &s) // carries the resourceVersion we read: optimistic concurrency
		}
		switch {
		case err == nil:
			return secretWrite{rv: s.ResourceVersion, reasons: reasons}, nil
		case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
			log.V(1).Info("another replica wrote the secret first; re-reading", "secret", key.String())
			continue
		default:
			return secretWrite{}, fmt.Errorf("write secret %s: %w", key, err)
		}
	}
}

// ensureCABundle patches every webhook of the configuration whose caBundle differs from the
// wanted one, with the resourceVersion just read as a precondition.
func (r *Runnable) ensureCABundle(ctx context.Context, ours []*x509.Certificate) error {
	log := ctrllog.FromContext(ctx).WithName("selfcert")
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

// writeFiles puts the CA bundle (ca.crt), then tls.key, then tls.crt into CertDir when they
// differ, each by an atomic rename (certwatcher reloads on each; a key without its certificate
// fails to load and keeps the previous pair until the certificate follows).
func (r *Runnable) writeFiles(kp keyPair, bundle []byte) error {
	if err := os.MkdirAll(r.o.CertDir, 0o700); err != nil {
		return fmt.Errorf("cert dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{FileCABundle, bundle}, {KeyTLSKey, kp.keyPEM}, {KeyTLSCert, kp.certPEM}} {
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

// waitForChange returns when a Secret or the webhook configuration changes after what the
// last pass saw, when a renewal may be due, or after the resync interval.
func (r *Runnable) waitForChange(ctx context.Context) {
	r.mu.Lock()
	secretRV, configRV, cacheSecretRV := r.secretRV, r.configRV, r.cacheSecretRV
	wait := r.o.ResyncInterval
	// Wake up for the serving certificates' renewal (the CA's comes earlier than its
	// certificates' ends, and a new CA also renews the webhook's certificate).
	for _, c := range []*x509.Certificate{r.served, r.cacheServed} {
		if c == nil {
			continue
		}
		if d := renewAt(c).Sub(r.o.Now()); d < wait {
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
	cacheW := watch.Interface(watch.NewFake()) // never fires
	if r.o.CacheEnabled() {
		cacheW = r.watch(ctx, &corev1.SecretList{}, r.o.Namespace, r.o.CacheSecretName, cacheSecretRV)
	}
	defer cacheW.Stop()
	select {
	case <-ctx.Done():
	case <-secretW.ResultChan():
	case <-configW.ResultChan():
	case <-cacheW.ResultChan():
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
		ctrllog.FromContext(ctx).WithName("selfcert").V(1).Info("watch failed; relying on resync", "name", name, "error", err.Error())
		return watch.NewFake() // never fires
	}
	return w
}
