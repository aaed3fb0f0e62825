package selfcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

func testOptions(t *testing.T) *Options {
	t.Helper()
	o := DefaultOptions()
	o.SecretName = "kvinject-webhook-cert"
	o.Namespace = "kvinject-system"
	o.CertDir = t.TempDir()
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

// verify checks that the serving certificate in st is trusted by bundle for the Service name at now.
func verify(t *testing.T, certPEM, bundle []byte, now time.Time) error {
	t.Helper()
	return verifyFor(t, certPEM, bundle, "kvinject-webhook.kvinject-system.svc", now)
}

// verifyFor checks that a serving certificate is trusted by bundle for dnsName at now.
func verifyFor(t *testing.T, certPEM, bundle []byte, dnsName string, now time.Time) error {
	t.Helper()
	c, err := parseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("empty bundle")
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

func TestPlanCreatesAndKeeps(t *testing.T) {
	o := testOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, reasons, err := plan(nil, o, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(reasons) == 0 {
		t.Fatal("a new Secret must give reasons")
	}
	data := st.data()
	if err := verify(t, data[KeyTLSCert], data[KeyCABundle], now); err != nil {
		t.Fatalf("fresh certificate not trusted by the bundle: %v", err)
	}
	if _, err := tls.X509KeyPair(data[KeyTLSCert], data[KeyTLSKey]); err != nil {
		t.Fatalf("tls.crt/tls.key: %v", err)
	}
	if got := st.ca.cert.NotAfter.Sub(now); got != o.CAValidity {
		t.Errorf("CA lifetime from now = %s, want %s", got, o.CAValidity)
	}
	if got := st.serving.cert.NotAfter.Sub(now); got != o.CertValidity {
		t.Errorf("serving lifetime from now = %s, want %s", got, o.CertValidity)
	}
	for _, n := range []string{"kvinject-webhook.kvinject-system.svc", "kvinject-webhook.kvinject-system.svc.cluster.local"} {
		if st.serving.cert.VerifyHostname(n) != nil {
			t.Errorf("serving certificate does not name %s", n)
		}
	}
	// A day later: nothing to do, same bytes.
	st2, reasons, err := plan(data, o, now.Add(24*time.Hour))
	if err != nil || len(reasons) != 0 {
		t.Fatalf("up-to-date Secret: reasons %v, err %v", reasons, err)
	}
	for k, v := range st2.data() {
		if !bytes.Equal(v, data[k]) {
			t.Errorf("%s changed although nothing was due", k)
		}
	}
}

func TestPlanRenewsServingAtTwoThirds(t *testing.T) {
	o := testOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, now)
	data := st.data()
	due := renewAt(st.serving.cert)
	if _, reasons, _ := plan(data, o, due.Add(-time.Second)); len(reasons) != 0 {
		t.Fatalf("renewed before 2/3: %v", reasons)
	}
	st2, reasons, err := plan(data, o, due)
	if err != nil || len(reasons) != 1 || !strings.Contains(reasons[0], "serving certificate due") {
		t.Fatalf("at 2/3: reasons %v, err %v", reasons, err)
	}
	if !bytes.Equal(st2.ca.certPEM, data[KeyCACert]) || !bytes.Equal(st2.data()[KeyCABundle], data[KeyCABundle]) {
		t.Error("serving renewal must keep the CA and the bundle")
	}
	if bytes.Equal(st2.serving.certPEM, data[KeyTLSCert]) || bytes.Equal(st2.serving.keyPEM, data[KeyTLSKey]) {
		t.Error("serving certificate and key not renewed")
	}
	if err := verify(t, st2.serving.certPEM, data[KeyCABundle], due); err != nil {
		t.Errorf("renewed certificate not trusted by the unchanged bundle: %v", err)
	}
}

// A shortened validity takes effect at once: certificates issued for longer
// are replaced, the old CA staying in the bundle.
func TestPlanShortenedValidity(t *testing.T) {
	o := testOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, now)
	data := st.data()
	short := *o
	short.CAValidity, short.CertValidity = 2*time.Minute, 45*time.Second
	st2, reasons, err := plan(data, &short, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CA lives longer than the configured 2m0s", "serving certificate not signed by the current CA"}
	if strings.Join(reasons, "; ") != strings.Join(want, "; ") {
		t.Errorf("reasons %q, want %q", reasons, want)
	}
	if got := st2.serving.cert.NotAfter.Sub(now.Add(time.Minute)); got != short.CertValidity {
		t.Errorf("new serving certificate lives %s, want %s", got, short.CertValidity)
	}
	if err := verify(t, data[KeyTLSCert], st2.data()[KeyCABundle], now.Add(time.Minute)); err != nil {
		t.Errorf("the old serving certificate is no longer trusted by the new bundle: %v", err)
	}
	// Reissued for the short validity, they are kept until due.
	if _, reasons, _ := plan(st2.data(), &short, now.Add(time.Minute+time.Second)); len(reasons) != 0 {
		t.Errorf("short-lived certificates replaced again: %v", reasons)
	}
}

func TestPlanRotatesCAKeepingTheOldOne(t *testing.T) {
	o := testOptions(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st0, _, _ := plan(nil, o, t0)
	due := renewAt(st0.ca.cert)
	// The serving certificate replicas serve just before the CA's renewal.
	st, reasons, _ := plan(st0.data(), o, due.Add(-24*time.Hour))
	if len(reasons) != 1 || !st.ca.cert.Equal(st0.ca.cert) {
		t.Fatalf("before the CA's renewal: reasons %v", reasons)
	}
	old := st.data()
	st2, reasons, err := plan(old, o, due)
	if err != nil || len(reasons) == 0 || !strings.Contains(reasons[0], "CA due") {
		t.Fatalf("at 2/3 of the CA: reasons %v, err %v", reasons, err)
	}
	if st2.ca.cert.Equal(st.ca.cert) {
		t.Fatal("CA not renewed")
	}
	if len(st2.bundle) != 2 || !st2.bundle[0].Equal(st2.ca.cert) || !st2.bundle[1].Equal(st.ca.cert) {
		t.Fatalf("bundle after rotation has %d CAs, want new then old", len(st2.bundle))
	}
	if st2.serving.cert.CheckSignatureFrom(st2.ca.cert) != nil {
		t.Fatal("new serving certificate not signed by the new CA")
	}
	newData := st2.data()
	// During the switch, the old serving certificate (still served by replicas that have not
	// caught up) and the new one are both trusted by the new bundle.
	for name, c := range map[string][]byte{"old": old[KeyTLSCert], "new": newData[KeyTLSCert]} {
		if err := verify(t, c, newData[KeyCABundle], due); err != nil {
			t.Errorf("%s serving certificate not trusted during the switch: %v", name, err)
		}
	}
	// The old CA stays in the bundle until it expires, then leaves.
	oldCA := st.ca.cert
	before, _, _ := plan(newData, o, oldCA.NotAfter.Add(-time.Second))
	if !containsCert(before.bundle, oldCA) {
		t.Error("old CA left the bundle before it expired")
	}
	after, _, _ := plan(before.data(), o, oldCA.NotAfter)
	if containsCert(after.bundle, oldCA) || len(after.bundle) != 1 {
		t.Errorf("old CA still in the bundle after it expired (%d CAs)", len(after.bundle))
	}
	// No serving certificate signed by the old CA outlives it.
	if oldServing, _ := parseCert(old[KeyTLSCert]); oldServing.NotAfter.After(oldCA.NotAfter) {
		t.Error("old serving certificate outlives its CA")
	}
}

func TestServingNeverOutlivesCA(t *testing.T) {
	o := testOptions(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, t0)
	// Just before the CA's renewal, a new serving certificate would run past nothing: cap check.
	late := st.ca.cert.NotAfter.Add(-30 * 24 * time.Hour)
	kp, err := newServing(&st.ca, o.dnsNames, o.CertValidity, late)
	if err != nil {
		t.Fatal(err)
	}
	if !kp.cert.NotAfter.Equal(st.ca.cert.NotAfter) {
		t.Errorf("serving NotAfter %s, want capped at the CA's %s", kp.cert.NotAfter, st.ca.cert.NotAfter)
	}
}

func TestPlanRepairs(t *testing.T) {
	o := testOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, now)
	good := st.data()
	other := testOptions(t)
	other.ServiceName = "renamed"
	other.Complete()
	if err := other.Validate(); err != nil {
		t.Fatal(err)
	}
	otherSt, _, _ := plan(nil, other, now)
	cases := map[string]struct {
		mutate  func(map[string][]byte)
		opts    *Options
		newCA   bool
		wantMsg string
	}{
		"garbage CA key":      {func(d map[string][]byte) { d[KeyCAKey] = []byte("nope") }, o, true, "no usable CA"},
		"mismatched CA key":   {func(d map[string][]byte) { d[KeyCAKey] = d[KeyTLSKey] }, o, true, "does not match"},
		"serving is not a CA": {func(d map[string][]byte) { d[KeyCACert], d[KeyCAKey] = d[KeyTLSCert], d[KeyTLSKey] }, o, true, "not a CA"},
		"missing serving key": {func(d map[string][]byte) { delete(d, KeyTLSKey) }, o, false, "no usable serving certificate"},
		"serving of other CA": {func(d map[string][]byte) {
			d[KeyTLSCert], d[KeyTLSKey] = otherSt.serving.certPEM, otherSt.serving.keyPEM
		}, o, false, "not signed by the current CA"},
		"service renamed": {func(map[string][]byte) {}, other, false, "serving certificate names"},
		"bundle lost":     {func(d map[string][]byte) { delete(d, KeyCABundle) }, o, false, "CA bundle out of date"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := map[string][]byte{}
			for k, v := range good {
				d[k] = bytes.Clone(v)
			}
			tc.mutate(d)
			st2, reasons, err := plan(d, tc.opts, now)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(reasons, ";"), tc.wantMsg) {
				t.Errorf("reasons %q, want one containing %q", reasons, tc.wantMsg)
			}
			if gotNew := !st2.ca.cert.Equal(st.ca.cert); gotNew != tc.newCA {
				t.Errorf("new CA = %v, want %v", gotNew, tc.newCA)
			}
			out := st2.data()
			if _, err := tls.X509KeyPair(out[KeyTLSCert], out[KeyTLSKey]); err != nil {
				t.Errorf("result key pair: %v", err)
			}
			if _, reasons, _ := plan(out, tc.opts, now); len(reasons) != 0 {
				t.Errorf("result is not stable: %v", reasons)
			}
		})
	}
}

func cacheOptions(t *testing.T) *Options {
	t.Helper()
	o := DefaultOptions()
	o.SecretName, o.CacheSecretName = "kvinject-webhook-cert", "kvinject-cache-cert"
	o.Namespace = "kvinject-system"
	o.CertDir = t.TempDir()
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return &o
}

func TestPlanCacheCreatesAndKeeps(t *testing.T) {
	o := cacheOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, now)
	cs, reasons, err := planCache(nil, st, o, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(reasons) == 0 {
		t.Fatal("a new Secret must give reasons")
	}
	data := cs.data()
	var keys []string
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"ca.crt", "tls.crt", "tls.key"}) {
		t.Errorf("the cache's Secret holds %v, want ca.crt, tls.crt and tls.key (never the CA's key)", keys)
	}
	if !bytes.Equal(data[FileCABundle], st.data()[KeyCABundle]) {
		t.Error("ca.crt is not the CA bundle")
	}
	if _, err := tls.X509KeyPair(data[KeyTLSCert], data[KeyTLSKey]); err != nil {
		t.Fatalf("tls.crt/tls.key: %v", err)
	}
	for _, n := range []string{"kvinject-cache", "kvinject-cache.kvinject-system", "kvinject-cache.kvinject-system.svc", "kvinject-cache.kvinject-system.svc.cluster.local"} {
		if err := verifyFor(t, data[KeyTLSCert], data[FileCABundle], n, now); err != nil {
			t.Errorf("cache certificate not trusted for %s: %v", n, err)
		}
	}
	if cs.serving.cert.VerifyHostname("kvinject-webhook.kvinject-system.svc") == nil {
		t.Error("the cache's certificate names the webhook")
	}
	if got := cs.serving.cert.NotAfter.Sub(now); got != o.CertValidity {
		t.Errorf("cache certificate lifetime from now = %s, want %s", got, o.CertValidity)
	}
	if bytes.Equal(cs.serving.keyPEM, st.serving.keyPEM) {
		t.Error("the cache and the webhook share a key")
	}
	// A day later: nothing to do, same bytes.
	cs2, reasons, err := planCache(data, st, o, now.Add(24*time.Hour))
	if err != nil || len(reasons) != 0 {
		t.Fatalf("up-to-date Secret: reasons %v, err %v", reasons, err)
	}
	for k, v := range cs2.data() {
		if !bytes.Equal(v, data[k]) {
			t.Errorf("%s changed although nothing was due", k)
		}
	}
	// At 2/3 of its lifetime it is renewed by the same CA.
	due := renewAt(cs.serving.cert)
	cs3, reasons, err := planCache(data, st, o, due)
	if err != nil || len(reasons) != 1 || !strings.Contains(reasons[0], "cache certificate due") {
		t.Fatalf("at 2/3: reasons %v, err %v", reasons, err)
	}
	if bytes.Equal(cs3.serving.certPEM, data[KeyTLSCert]) || cs3.serving.cert.CheckSignatureFrom(st.ca.cert) != nil {
		t.Error("cache certificate not renewed by the CA")
	}
}

// After a CA rotation the cache's certificate stays signed by the old CA, which the bundle
// keeps, until its own renewal: pods given the bundle before the rotation keep trusting it.
func TestPlanCacheAcrossCARotation(t *testing.T) {
	o := cacheOptions(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st0, _, _ := plan(nil, o, t0)
	caDue := renewAt(st0.ca.cert)
	before := caDue.Add(-24 * time.Hour)
	st, _, _ := plan(st0.data(), o, before)
	cs, _, _ := planCache(nil, st, o, before)
	oldBundle := st.data()[KeyCABundle]

	st2, _, _ := plan(st.data(), o, caDue)
	if st2.ca.cert.Equal(st.ca.cert) {
		t.Fatal("CA not renewed")
	}
	cs2, reasons, err := planCache(cs.data(), st2, o, caDue)
	if err != nil || strings.Join(reasons, "; ") != "CA bundle out of date" {
		t.Fatalf("at the CA's rotation: reasons %v, err %v", reasons, err)
	}
	if !bytes.Equal(cs2.serving.certPEM, cs.serving.certPEM) {
		t.Error("the CA's rotation replaced the cache's certificate at once")
	}
	for name, bundle := range map[string][]byte{"old": oldBundle, "new": cs2.data()[FileCABundle]} {
		if err := verifyFor(t, cs2.serving.certPEM, bundle, "kvinject-cache.kvinject-system.svc", caDue); err != nil {
			t.Errorf("the %s bundle does not trust the cache's certificate: %v", name, err)
		}
	}
	// At its own renewal the new CA signs it.
	due := renewAt(cs.serving.cert)
	cs3, _, _ := planCache(cs2.data(), st2, o, due)
	if cs3.serving.cert.CheckSignatureFrom(st2.ca.cert) != nil {
		t.Error("the renewed cache certificate is not signed by the new CA")
	}
	if err := verifyFor(t, cs3.serving.certPEM, cs3.data()[FileCABundle], "kvinject-cache.kvinject-system.svc", due); err != nil {
		t.Error(err)
	}

	// A CA that left the bundle (the webhook's Secret deleted to force a new CA) no longer
	// vouches for the cache: its certificate is replaced at once.
	fresh, _, _ := plan(nil, o, caDue)
	cs4, reasons, _ := planCache(cs.data(), fresh, o, caDue)
	if !strings.Contains(strings.Join(reasons, ";"), "not signed by a CA of the bundle") || cs4.serving.cert.CheckSignatureFrom(fresh.ca.cert) != nil {
		t.Errorf("cache certificate of a forgotten CA: reasons %v", reasons)
	}
}

func TestPlanCacheRepairs(t *testing.T) {
	o := cacheOptions(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, _, _ := plan(nil, o, now)
	cs, _, _ := planCache(nil, st, o, now)
	good := cs.data()
	renamed := *o
	renamed.CacheServiceName = "other-cache"
	renamed.Complete()
	if err := renamed.Validate(); err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := plan(nil, o, now)
	foreignCache, _, _ := planCache(nil, foreign, o, now)
	short := *o
	short.CertValidity = time.Hour
	short.Complete()
	if err := short.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		mutate  func(map[string][]byte)
		opts    *Options
		wantMsg string
	}{
		"missing key":        {func(d map[string][]byte) { delete(d, KeyTLSKey) }, o, "no usable cache certificate"},
		"the webhook's pair": {func(d map[string][]byte) { d[KeyTLSCert], d[KeyTLSKey] = st.serving.certPEM, st.serving.keyPEM }, o, "cache certificate names"},
		"another CA's certificate": {func(d map[string][]byte) {
			d[KeyTLSCert], d[KeyTLSKey] = foreignCache.serving.certPEM, foreignCache.serving.keyPEM
		}, o, "not signed by a CA of the bundle"},
		"service renamed":    {func(map[string][]byte) {}, &renamed, "cache certificate names"},
		"validity shortened": {func(map[string][]byte) {}, &short, "lives longer than the configured 1h0m0s"},
		"bundle lost":        {func(d map[string][]byte) { delete(d, FileCABundle) }, o, "CA bundle out of date"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := map[string][]byte{}
			for k, v := range good {
				d[k] = bytes.Clone(v)
			}
			tc.mutate(d)
			cs2, reasons, err := planCache(d, st, tc.opts, now)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(reasons, ";"), tc.wantMsg) {
				t.Errorf("reasons %q, want one containing %q", reasons, tc.wantMsg)
			}
			out := cs2.data()
			if err := verifyFor(t, out[KeyTLSCert], out[FileCABundle], tc.opts.CacheServiceName+".kvinject-system.svc", now); err != nil {
				t.Errorf("result not trusted: %v", err)
			}
			if _, reasons, _ := planCache(out, st, tc.opts, now); len(reasons) != 0 {
				t.Errorf("result is not stable: %v", reasons)
			}
		})
	}
}

func TestCABundleFor(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca1, _ := newCA(time.Hour, now)
	ca2, _ := newCA(time.Hour, now.Add(10*time.Minute))
	foreignOld, _ := newCA(time.Hour, now.Add(-10*time.Minute))
	expired, _ := newCA(time.Minute, now.Add(-time.Hour))
	at := now.Add(20 * time.Minute)
	enc := func(kps ...*keyPair) []byte {
		var b []byte
		for _, k := range kps {
			b = append(b, k.certPEM...)
		}
		return b
	}
	certsOf := func(b []byte) []*x509.Certificate { c, _ := parseCerts(b); return c }

	// A stale replica (knows only ca1) must not remove ca2, added by a replica that saw the newer Secret.
	got := certsOf(caBundleFor([]*x509.Certificate{ca1.cert}, enc(ca2, ca1), at))
	if len(got) != 2 || !containsCert(got, ca1.cert) || !containsCert(got, ca2.cert) {
		t.Errorf("stale replica: bundle has %d CAs, want ca1 and ca2", len(got))
	}
	// Older or foreign CAs not in ours leave; so do expired ones; garbage is ignored.
	got = certsOf(caBundleFor([]*x509.Certificate{ca2.cert, ca1.cert}, append(enc(foreignOld, expired), "junk"...), at))
	if len(got) != 2 || containsCert(got, foreignOld.cert) || containsCert(got, expired.cert) {
		t.Errorf("bundle keeps old or expired CAs: %d CAs", len(got))
	}
	// Up to date: same bytes, so no patch.
	want := caBundleFor([]*x509.Certificate{ca2.cert, ca1.cert}, nil, at)
	if again := caBundleFor([]*x509.Certificate{ca2.cert, ca1.cert}, want, at); !bytes.Equal(again, want) {
		t.Error("caBundleFor is not stable")
	}
}

func TestValidate(t *testing.T) {
	o := DefaultOptions()
	o.Complete()
	err := o.Validate()
	for _, want := range []string{"--self-signed-cert-secret is empty", "--self-signed-namespace is empty", "--cert-dir is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
	o = DefaultOptions()
	o.SecretName, o.Namespace, o.CertDir = "Bad_Name", "ns", "relative"
	o.CertValidity = 2 * o.CAValidity
	o.Complete()
	err = o.Validate()
	for _, want := range []string{"--self-signed-cert-secret \"Bad_Name\"", "absolute", "exceeds"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
	if _, err := New(nil, &o); err == nil {
		t.Error("New accepted unvalidated options")
	}

	// The cache's certificate.
	cacheCases := map[string]struct {
		set  func(*Options)
		want string
	}{
		"alone":            {func(o *Options) { o.SecretName = "" }, "--self-signed-cache-secret needs --self-signed-cert-secret"},
		"same secret":      {func(o *Options) { o.CacheSecretName = o.SecretName }, "must not hold the CA's key"},
		"same service":     {func(o *Options) { o.CacheServiceName = o.ServiceName }, "is also --service-name"},
		"bad secret name":  {func(o *Options) { o.CacheSecretName = "Cache_Cert" }, "--self-signed-cache-secret \"Cache_Cert\""},
		"no service name":  {func(o *Options) { o.CacheServiceName = "" }, "--cache-service-name is empty"},
		"bad service name": {func(o *Options) { o.CacheServiceName = "kvinject.cache" }, "--cache-service-name \"kvinject.cache\""},
	}
	for name, tc := range cacheCases {
		o := DefaultOptions()
		o.SecretName, o.CacheSecretName, o.Namespace, o.CertDir = "kvinject-webhook-cert", "kvinject-cache-cert", "ns", "/certs"
		tc.set(&o)
		if !o.Enabled() {
			t.Errorf("%s: a cache Secret alone does not ask for self-signed mode", name)
		}
		o.Complete()
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want it to say %q", name, err, tc.want)
		}
	}
	o = DefaultOptions()
	o.SecretName, o.CacheSecretName, o.Namespace, o.CertDir = "kvinject-webhook-cert", "kvinject-cache-cert", "ns", "/certs"
	o.Complete()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []string{"kvinject-cache.ns.svc", "kvinject-cache.ns.svc.cluster.local", "kvinject-cache", "kvinject-cache.ns"}
	if got := o.CacheDNSNames(); !slices.Equal(got, want) {
		t.Errorf("CacheDNSNames() = %v, want %v", got, want)
	}
	o.CacheSecretName = ""
	o.Complete()
	if err := o.Validate(); err != nil || len(o.CacheDNSNames()) != 0 || o.CacheEnabled() {
		t.Errorf("without the cache: Validate() = %v, CacheDNSNames() = %v", err, o.CacheDNSNames())
	}
}

// The files written by writeFiles are what controller-runtime's certwatcher serves, and a
// rewrite is picked up.
func TestWriteFilesReloadedByCertwatcher(t *testing.T) {
	o := testOptions(t)
	o.CertDir = filepath.Join(t.TempDir(), "certs") // created on demand
	r := &Runnable{o: o}
	now := time.Now()
	st, _, _ := plan(nil, o, now)
	if err := r.writeFiles(st.serving, st.data()[KeyCABundle]); err != nil {
		t.Fatal(err)
	}
	cw, err := certwatcher.New(filepath.Join(o.CertDir, KeyTLSCert), filepath.Join(o.CertDir, KeyTLSKey))
	if err != nil {
		t.Fatal(err)
	}
	cw = cw.WithWatchInterval(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = cw.Start(ctx) }()
	leaf := func() *x509.Certificate {
		c, _ := cw.GetCertificate(nil)
		if c == nil {
			return nil
		}
		l, _ := x509.ParseCertificate(c.Certificate[0])
		return l
	}
	if l := leaf(); l == nil || !l.Equal(st.serving.cert) {
		t.Fatal("certwatcher does not serve the written certificate")
	}
	st2, _, _ := plan(st.data(), o, renewAt(st.serving.cert))
	if err := r.writeFiles(st2.serving, st2.data()[KeyCABundle]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l := leaf(); l == nil || !l.Equal(st2.serving.cert); l = leaf() {
		if time.Now().After(deadline) {
			t.Fatal("certwatcher did not reload the renewed certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	entries, _ := os.ReadDir(o.CertDir)
	if len(entries) != 3 {
		t.Errorf("cert dir holds %d entries, want ca.crt, tls.crt and tls.key only", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(o.CertDir, FileCABundle)); !bytes.Equal(b, st2.data()[KeyCABundle]) {
		t.Error("ca.crt is not the CA bundle")
	}
}
