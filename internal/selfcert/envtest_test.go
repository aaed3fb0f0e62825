package selfcert

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

const (
	k8sVersion = "v1.37.2"
	namespace  = "kvinject-system"
	saName     = "kvinject-webhook"
	// The names the overlay's RBAC allows (resourceNames).
	secretName = "kvinject-webhook-cert"
	configName = "kvinject"
	// The cache's Secret and Service, as manifests/with-cache/self-signed names them.
	cacheSecretName  = "kvinject-cache-cert"
	cacheServiceName = "kvinject-cache"
)

// The RBAC of the self-signed overlay, and what the installation with the cache adds to it.
var (
	overlayRBAC   = filepath.Join("manifests", "overlays", "self-signed", "rbac.yaml")
	withCacheRBAC = filepath.Join("manifests", "with-cache", "self-signed", "rbac.yaml")
)

func TestMain(m *testing.M) {
	code := m.Run()
	k8stest.StopShared()
	os.Exit(code)
}

// apiServer is a real kube-apiserver and etcd (once per test binary) from the binaries
// test/cluster/build-binaries.sh puts in bin/k8s/. Missing binaries skip the test, or fail it
// under CI.
func apiServer(t *testing.T) *rest.Config { return k8stest.Shared(t) }

// fixture makes the namespace, the webhook's ServiceAccount with exactly the self-signed
// overlay's RBAC, and a webhook configuration; it returns a config impersonating the webhook.
func fixture(t *testing.T, admin client.Client, cfg *rest.Config) *rest.Config {
	t.Helper()
	return fixtureWith(t, admin, cfg, false)
}

// fixtureWith is fixture, with the RBAC of the installation with the cache (and no cache
// Secret) when withCache; without it, that RBAC is removed.
func fixtureWith(t *testing.T, admin client.Client, cfg *rest.Config, withCache bool) *rest.Config {
	t.Helper()
	ctx := context.Background()
	create := func(o client.Object) {
		t.Helper()
		if err := admin.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: saName}})
	// The RBAC of manifests/overlays/self-signed, as shipped.
	for _, o := range rbacObjects(t, overlayRBAC) {
		create(o)
	}
	for _, o := range rbacObjects(t, withCacheRBAC) {
		if withCache {
			create(o)
		} else if err := admin.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	none := admissionregistrationv1.SideEffectClassNone
	create(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: configName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.kvinject.io",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: namespace, Name: saName, Path: ptr.To("/mutate-v1-pod"), Port: ptr.To[int32](443),
			}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kvinject.io/inject": "true"}},
		}},
	})
	// Start from no Secret and an empty caBundle.
	for _, name := range []string{secretName, cacheSecretName} {
		if err := admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	wipeCABundle(t, admin)
	imp := rest.CopyConfig(cfg)
	imp.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + saName,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	// Wait until the authorizer has seen the cache's Role come or go.
	webhook := adminClient(t, imp)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := webhook.Get(ctx, types.NamespacedName{Namespace: namespace, Name: cacheSecretName}, &corev1.Secret{})
		if apierrors.IsForbidden(err) != withCache {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook's access to the cache's Secret did not follow the RBAC (withCache %v): %v", withCache, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return imp
}

// rbacObjects reads the RBAC objects of a shipped file (relative to the repository root).
func rbacObjects(t *testing.T, file string) []client.Object {
	t.Helper()
	rbacYAML, err := os.ReadFile(filepath.Join(k8stest.RepoRoot(t), file))
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	for _, doc := range strings.Split(string(rbacYAML), "\n---\n") {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		var obj client.Object
		switch head.Kind {
		case "Role":
			obj = &rbacv1.Role{}
		case "RoleBinding":
			obj = &rbacv1.RoleBinding{}
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		default:
			t.Fatalf("unexpected kind %q in %s", head.Kind, file)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatal(err)
		}
		// The shipped names bind the webhook's ServiceAccount; re-running is fine.
		objs = append(objs, obj)
	}
	return objs
}

func wipeCABundle(t *testing.T, admin client.Client) {
	t.Helper()
	patch := []byte(`{"webhooks":[{"name":"pods.kvinject.io","clientConfig":{"caBundle":null}}]}`)
	var whc admissionregistrationv1.MutatingWebhookConfiguration
	whc.Name = configName
	if err := admin.Patch(context.Background(), &whc, client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

func replicaOptions(t *testing.T) *Options {
	t.Helper()
	o := DefaultOptions()
	o.SecretName, o.Namespace, o.WebhookConfigName, o.ServiceName = secretName, namespace, configName, saName
	o.CertDir = filepath.Join(t.TempDir(), "certs")
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

// cacheReplicaOptions are a replica's options with the cache's certificate, as
// manifests/with-cache/self-signed passes them.
func cacheReplicaOptions(t *testing.T) *Options {
	t.Helper()
	o := replicaOptions(t)
	o.CacheSecretName, o.CacheServiceName = cacheSecretName, cacheServiceName
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return o
}

func adminClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caBundle(t *testing.T, c client.Client) []byte {
	t.Helper()
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(context.Background(), types.NamespacedName{Name: configName}, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Webhooks[0].ClientConfig.CABundle
}

// servedVerifies checks the certificate in a replica's cert dir against a caBundle, as the API
// server would when it calls the webhook through the Service.
func servedVerifies(certDir string, bundle []byte, now time.Time) error {
	b, err := os.ReadFile(filepath.Join(certDir, KeyTLSCert))
	if err != nil {
		return err
	}
	return verifiesFor(b, bundle, saName+"."+namespace+".svc", now)
}

// verifiesFor checks a serving certificate against a CA bundle for dnsName, as a client would.
func verifiesFor(certPEM, bundle []byte, dnsName string, now time.Time) error {
	c, err := parseCert(certPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("CA bundle is empty")
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// cacheHost is the name agents use for the cache: the host of the webhook's --cache-url.
const cacheHost = cacheServiceName + "." + namespace + ".svc"

func getSecret(t *testing.T, c client.Client, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// Two replicas start at once, with only the overlay's RBAC: they agree on one certificate.
func TestReplicasRacingAgree(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	for round := range 5 {
		imp := fixture(t, admin, cfg)
		var replicas []*Options
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range 3 {
			o := replicaOptions(t)
			replicas = append(replicas, o)
			r, err := New(imp, o)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				errs[i] = r.EnsureCertificate(ctx)
				if errs[i] == nil {
					errs[i] = r.ReadyChecker()(nil)
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d replica %d: %v", round, i, err)
			}
		}
		first, _ := os.ReadFile(filepath.Join(replicas[0].CertDir, KeyTLSCert))
		var s corev1.Secret
		if err := admin.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: secretName}, &s); err != nil {
			t.Fatal(err)
		}
		if string(s.Data[KeyTLSCert]) != string(first) || s.Type != corev1.SecretTypeTLS {
			t.Fatalf("round %d: replica 0 serves another certificate than the Secret's", round)
		}
		for i, o := range replicas[1:] {
			b, _ := os.ReadFile(filepath.Join(o.CertDir, KeyTLSCert))
			if string(b) != string(first) {
				t.Fatalf("round %d: replica %d serves another certificate", round, i+1)
			}
			if err := servedVerifies(o.CertDir, caBundle(t, admin), time.Now()); err != nil {
				t.Fatalf("round %d: replica %d: %v", round, i+1, err)
			}
		}
	}
}

// With short lifetimes, replicas rotate the serving certificate and the CA several times; at
// every moment every replica's certificate verifies against the caBundle, the old CA stays in
// the caBundle through the switch, and leaves it afterwards.
//
// With the cache's certificate too: at every moment the cache's certificate verifies against the
// caBundle and against its Secret's ca.crt, and against each replica's ca.crt file (what the
// webhook gives pods) but for the moment a replica takes to see a new Secret.
func TestRotationNeverBreaksAdmission(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	imp := fixtureWith(t, admin, cfg, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var replicas []*Options
	var runners []*Runnable
	var wg sync.WaitGroup
	for range 2 {
		o := cacheReplicaOptions(t)
		o.CAValidity, o.CertValidity, o.ResyncInterval = 6*time.Second, 3*time.Second, 5*time.Second
		r, err := New(imp, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.EnsureCertificate(ctx); err != nil {
			t.Fatal(err)
		}
		replicas, runners = append(replicas, o), append(runners, r)
		wg.Go(func() { _ = r.Start(ctx) })
	}
	defer wg.Wait()
	defer cancel()

	cas := map[string]bool{}     // every CA seen in the caBundle
	serving := map[string]bool{} // every serving certificate seen on disk
	cacheCerts := map[string]bool{}
	staleSince := make([]time.Time, len(replicas)) // when a replica's ca.crt stopped trusting the cache
	sawTwo, sawOneAfterTwo := false, false
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		// The cache's Secret before the caBundle: a CA is in the caBundle before it signs.
		cacheSecret := getSecret(t, admin, cacheSecretName)
		cacheCerts[string(cacheSecret.Data[KeyTLSCert])] = true
		// Files first, then the caBundle: a replica patches the caBundle before it writes files.
		var files [][]byte
		for _, o := range replicas {
			b, err := os.ReadFile(filepath.Join(o.CertDir, KeyTLSCert))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, b)
		}
		now := time.Now()
		bundle := caBundle(t, admin)
		for i, o := range replicas {
			if err := servedVerifies(o.CertDir, bundle, now); err != nil {
				// Re-read: the file may have been replaced after we read the bundle.
				if b, _ := os.ReadFile(filepath.Join(o.CertDir, KeyTLSCert)); string(b) == string(files[i]) {
					t.Fatalf("replica %d serves a certificate the caBundle does not trust: %v", i, err)
				}
			}
			serving[string(files[i])] = true
			if err := runners[i].ReadyChecker()(nil); err != nil {
				t.Fatalf("replica %d not ready: %v", i, err)
			}
		}
		if err := verifiesFor(cacheSecret.Data[KeyTLSCert], bundle, cacheHost, now); err != nil {
			t.Fatalf("the caBundle does not trust the cache's certificate: %v", err)
		}
		if err := verifiesFor(cacheSecret.Data[KeyTLSCert], cacheSecret.Data[FileCABundle], cacheHost, now); err != nil {
			t.Fatalf("the cache's Secret's ca.crt does not trust its certificate: %v", err)
		}
		for i, o := range replicas {
			ca, err := os.ReadFile(filepath.Join(o.CertDir, FileCABundle))
			if err != nil {
				t.Fatal(err)
			}
			if err := verifiesFor(cacheSecret.Data[KeyTLSCert], ca, cacheHost, now); err == nil {
				staleSince[i] = time.Time{}
			} else if staleSince[i].IsZero() {
				staleSince[i] = now
			} else if now.Sub(staleSince[i]) > time.Second {
				t.Fatalf("replica %d's ca.crt has not trusted the cache's certificate for %s: %v", i, now.Sub(staleSince[i]), err)
			}
		}
		certs, _ := parseCerts(bundle)
		for _, c := range certs {
			cas[string(c.Raw)] = true
		}
		if len(certs) >= 2 {
			sawTwo = true
		} else if sawTwo {
			sawOneAfterTwo = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(cas) < 3 {
		t.Errorf("saw %d CAs in 15 s, want at least 3 (CA lifetime 6 s, renewed at 4 s)", len(cas))
	}
	if len(serving) < 5 {
		t.Errorf("saw %d serving certificates in 15 s, want at least 5", len(serving))
	}
	if !sawTwo || !sawOneAfterTwo {
		t.Errorf("caBundle never held old and new CA (%v) or never dropped the old one (%v)", sawTwo, sawOneAfterTwo)
	}
	if len(cacheCerts) < 5 {
		t.Errorf("saw %d cache certificates in 15 s, want at least 5", len(cacheCerts))
	}
}

// Two replicas with the cache's certificate and the RBAC of manifests/with-cache/self-signed:
// they write one Secret for the cache, which their ca.crt and the caBundle trust; a deleted or
// broken Secret is written again long before the resync interval.
func TestCacheCertificate(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	imp := fixtureWith(t, admin, cfg, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var replicas []*Options
	var runners []*Runnable
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		o := cacheReplicaOptions(t)
		o.ResyncInterval = time.Hour
		r, err := New(imp, o)
		if err != nil {
			t.Fatal(err)
		}
		replicas, runners = append(replicas, o), append(runners, r)
		wg.Go(func() { errs[i] = r.EnsureCertificate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	check := func(t *testing.T) *corev1.Secret {
		t.Helper()
		s := getSecret(t, admin, cacheSecretName)
		if s.Type != corev1.SecretTypeTLS || s.Labels[labelManagedBy] != managedBy || s.Labels[labelComponent] != "cache-cert" {
			t.Errorf("cache Secret type %s labels %v", s.Type, s.Labels)
		}
		if len(s.Data) != 3 || s.Data[KeyCAKey] != nil {
			t.Errorf("cache Secret holds %d keys, want ca.crt, tls.crt and tls.key", len(s.Data))
		}
		webhookSecret := getSecret(t, admin, secretName)
		if string(s.Data[FileCABundle]) != string(webhookSecret.Data[KeyCABundle]) {
			t.Error("the cache's ca.crt is not the CA bundle")
		}
		now := time.Now()
		if err := verifiesFor(s.Data[KeyTLSCert], caBundle(t, admin), cacheHost, now); err != nil {
			t.Errorf("the caBundle does not trust the cache's certificate: %v", err)
		}
		for i, o := range replicas {
			ca, err := os.ReadFile(filepath.Join(o.CertDir, FileCABundle))
			if err != nil {
				t.Fatal(err)
			}
			if err := verifiesFor(s.Data[KeyTLSCert], ca, cacheHost, now); err != nil {
				t.Errorf("replica %d's ca.crt does not trust the cache's certificate: %v", i, err)
			}
			if err := runners[i].ReadyChecker()(nil); err != nil {
				t.Errorf("replica %d not ready: %v", i, err)
			}
		}
		return s
	}
	first := check(t)

	done := make(chan struct{})
	go func() { defer close(done); _ = runners[0].Start(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond) // let it reach its watch
	waitFor := func(what string, ok func(*corev1.Secret) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var s corev1.Secret
			err := admin.Get(ctx, types.NamespacedName{Namespace: namespace, Name: cacheSecretName}, &s)
			if err == nil && ok(&s) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s (%v)", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if err := admin.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitFor("deleted cache Secret written again", func(s *corev1.Secret) bool { return s.UID != first.UID })
	again := check(t)
	if string(again.Data[KeyTLSCert]) == string(first.Data[KeyTLSCert]) {
		t.Error("the deleted certificate came back: its key was only in the deleted Secret")
	}

	again.Data[KeyTLSCert] = []byte("broken")
	if err := admin.Update(ctx, again); err != nil {
		t.Fatal(err)
	}
	waitFor("broken cache Secret repaired", func(s *corev1.Secret) bool { return string(s.Data[KeyTLSCert]) != "broken" })
	check(t)
}

// Without the RBAC of the installation with the cache, or facing a cache Secret kvinject did not
// make (left over from cert-manager), the webhook still gets its own certificate and is ready;
// the foreign Secret is left alone.
func TestCacheCertificateRefusedLeavesWebhookServing(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	for _, tc := range []struct {
		name      string
		withCache bool
		foreign   bool
	}{{"no RBAC", false, false}, {"foreign Secret", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			imp := fixtureWith(t, admin, cfg, tc.withCache)
			ctx := context.Background()
			foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: cacheSecretName}, StringData: map[string]string{"x": "y"}}
			if tc.foreign {
				if err := admin.Create(ctx, foreign); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = admin.Delete(ctx, foreign) }()
			}
			o := cacheReplicaOptions(t)
			r, err := New(imp, o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := r.EnsureCertificate(ctx); err != nil {
				t.Fatalf("EnsureCertificate = %v: the cache's certificate must not hold back the webhook", err)
			}
			if err := r.ReadyChecker()(nil); err != nil {
				t.Errorf("not ready: %v", err)
			}
			if err := servedVerifies(o.CertDir, caBundle(t, admin), time.Now()); err != nil {
				t.Error(err)
			}
			st, err := r.ensureSecret(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = r.cachePass(ctx, st)
			if want := map[bool]string{false: "forbidden", true: "not managed by kvinject"}[tc.foreign]; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("cachePass = %v, want an error saying %q", err, want)
			}
			var s corev1.Secret
			err = admin.Get(ctx, client.ObjectKeyFromObject(foreign), &s)
			switch {
			case tc.foreign && (err != nil || string(s.Data["x"]) != "y" || len(s.Data) != 1):
				t.Errorf("foreign Secret was modified (%v)", err)
			case !tc.foreign && !apierrors.IsNotFound(err):
				t.Errorf("cache Secret written without its RBAC (%v)", err)
			}
		})
	}
}

// Someone wipes the caBundle (e.g. re-creating the webhook configuration): the watch brings it
// back long before the resync interval.
func TestCABundleRestoredPromptly(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	imp := fixture(t, admin, cfg)
	o := replicaOptions(t)
	o.ResyncInterval = time.Hour
	r, err := New(imp, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.EnsureCertificate(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Start(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond) // let it reach its watch
	wipeCABundle(t, admin)
	deadline := time.Now().Add(5 * time.Second)
	for servedVerifies(o.CertDir, caBundle(t, admin), time.Now()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("caBundle not restored within 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A Secret of that name that kvinject did not make is never overwritten.
func TestForeignSecretLeftAlone(t *testing.T) {
	cfg := apiServer(t)
	admin := adminClient(t, cfg)
	imp := fixture(t, admin, cfg)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretName}, StringData: map[string]string{"x": "y"}}
	if err := admin.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Delete(context.Background(), foreign) }()
	o := replicaOptions(t)
	r, err := New(imp, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = r.EnsureCertificate(ctx)
	if err == nil || !strings.Contains(err.Error(), "not managed by kvinject") {
		t.Fatalf("EnsureCertificate = %v, want a refusal", err)
	}
	if r.ReadyChecker()(nil) == nil {
		t.Error("ready without a certificate")
	}
	var s corev1.Secret
	_ = admin.Get(context.Background(), client.ObjectKeyFromObject(foreign), &s)
	if string(s.Data["x"]) != "y" || len(s.Data) != 1 {
		t.Error("foreign Secret was modified")
	}
}
