package credprovider

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/emutest"
)

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		wantErr string
	}{
		{"defaults", Options{}, ""},
		{"vault name", Options{DefaultVault: "homelab-kv", TenantID: tenantID}, ""},
		{"bad tenant", Options{TenantID: "not a tenant"}, `tenant id: "not a tenant" is not a tenant id (a GUID or a domain name)`},
		{"bad vault", Options{DefaultVault: "x"}, `default vault: vault name "x" is not valid: 3-24 letters, digits and hyphens, starting with a letter`},
		{"negative cache duration", Options{CacheDuration: -1}, "cache duration -1ns is negative"},
		{"negative timeout", Options{Timeout: -1}, "timeout -1ns is negative"},
		{"authority host the agent refuses", Options{AuthorityHost: "https://user@login.example.com/"},
			`AZURE_AUTHORITY_HOST must not carry a user or password (the value is not shown): an https URL like https://login.microsoftonline.com/`},
		{"every problem at once", Options{TenantID: "not a tenant", DefaultVault: "x", CacheDuration: -1, MatchImages: []string{"https://r.example.com"}},
			"tenant id: \"not a tenant\" is not a tenant id (a GUID or a domain name)\n" +
				"default vault: vault name \"x\" is not valid: 3-24 letters, digits and hyphens, starting with a letter\n" +
				"cache duration -1ns is negative\nmatch images: \"https://r.example.com\": no scheme, just host[:port][/path]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestProvideRefusesBeforeSigningIn: what the request lacks is said
// without any request to Entra ID or Key Vault (no proxy is set here, so
// one would fail differently).
func TestProvideRefusesBeforeSigningIn(t *testing.T) {
	iss := emutest.Issuer(t)
	token, err := iss.ServiceAccountToken(namespace, "puller")
	if err != nil {
		t.Fatal(err)
	}
	ann := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		o       Options
		image   string
		ann     map[string]string
		wantErr string
	}{
		{"no client id", Options{TenantID: tenantID}, "r.example.com/a", ann(spec.SAAnnotationPullSecret, "cred"),
			`error: image r.example.com/a, ServiceAccount apps/puller, ServiceAccount annotation azure.workload.identity/client-id: "" is not a GUID (8-4-4-4-12 hexadecimal digits). Fix: annotate the ServiceAccount with the identity's client id, and list azure.workload.identity/client-id in requiredServiceAccountAnnotationKeys`},
		{"no tenant", Options{}, "r.example.com/a", ann(spec.SAAnnotationClientID, clientID, spec.SAAnnotationPullSecret, "cred"),
			"error: image r.example.com/a, ServiceAccount apps/puller, no tenant id. Fix: annotate the ServiceAccount with azure.workload.identity/tenant-id, or give the provider --tenant-id"},
		{"bad tenant annotation", Options{TenantID: tenantID}, "r.example.com/a", ann(spec.SAAnnotationClientID, clientID, spec.SAAnnotationTenantID, "x y", spec.SAAnnotationPullSecret, "cred"),
			`error: image r.example.com/a, ServiceAccount apps/puller, ServiceAccount annotation azure.workload.identity/tenant-id: "x y" is not a tenant id (a GUID or a domain name). Fix: fix the annotation`},
		{"no pull secret", Options{TenantID: tenantID}, "r.example.com/a", ann(spec.SAAnnotationClientID, clientID),
			"error: image r.example.com/a, ServiceAccount apps/puller, the ServiceAccount has no annotation kvinject.io/pull-secret. Fix: annotate it with the Key Vault secret holding the registry credential, and list kvinject.io/pull-secret in requiredServiceAccountAnnotationKeys"},
		{"short reference without a default vault", Options{TenantID: tenantID}, "r.example.com/a", ann(spec.SAAnnotationClientID, clientID, spec.SAAnnotationPullSecret, "cred"),
			`error: image r.example.com/a, ServiceAccount apps/puller, ServiceAccount annotation kvinject.io/pull-secret: reference "cred" names no vault. Fix: give the provider --default-vault, or use a full secret URL in the annotation`},
		{"bad reference", Options{TenantID: tenantID, DefaultVault: vaultName}, "r.example.com/a", ann(spec.SAAnnotationClientID, clientID, spec.SAAnnotationPullSecret, "bad name"),
			`error: image r.example.com/a, ServiceAccount apps/puller, ServiceAccount annotation kvinject.io/pull-secret: reference "bad name": secret name "bad name" is not valid: 1-127 letters, digits and hyphens. Fix: fix the annotation: <name>[/<version>][#<path>] or https://<vault-host>/secrets/<name>`},
		{"bad image", Options{TenantID: tenantID}, "r.example.com/a\nb", nil,
			`error: image r.example.com/a b, ServiceAccount apps/puller, image "r.example.com/a\nb" is not an image name. Fix: check the pod's image`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Provide(context.Background(), Request{APIVersion: APIVersion, Kind: KindRequest, Image: tt.image, ServiceAccountToken: token, ServiceAccountAnnotations: tt.ann})
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			checkNoSecrets(t, err.Error(), token)
		})
	}
}

// TestAnswer: what a secret's value gives for an image, or why not, with
// the secret named and the value never quoted.
func TestAnswer(t *testing.T) {
	ref := func(s string) spec.Ref {
		cloud, _ := spec.LookupCloud(spec.DefaultCloud)
		r, err := spec.ParseRef(s, "https://homelab-kv.vault.azure.net", cloud)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name, image, ref, value string
		want                    map[string]AuthConfig
		wantProblem             string
	}{
		{name: "property holding a dockerconfigjson", image: "r.example.com/a", ref: "bundle#registry",
			value: `{"registry":{"auths":{"r.example.com":{"username":"u","password":"s3cret"}}}}`,
			want:  map[string]AuthConfig{"r.example.com": {Username: "u", Password: "s3cret"}}},
		{name: "property holding user:password", image: "r.example.com/a", ref: "bundle#pull", value: `{"pull":"u:s3cret"}`,
			want: map[string]AuthConfig{"r.example.com": {Username: "u", Password: "s3cret"}}},
		{name: "missing property", image: "r.example.com/a", ref: "bundle#registry", value: `{"db":"s3cret"}`,
			wantProblem: `error: vault homelab-kv.vault.azure.net, secret bundle#registry: property "registry" is missing: no key "registry" at the top level. Fix: fix the path in the reference, or add the key to the secret`},
		{name: "not a credential", image: "r.example.com/a", ref: "plain", value: "s3cret",
			wantProblem: `error: vault homelab-kv.vault.azure.net, secret plain: not a registry credential: the value (6 bytes) is neither JSON nor one line user:password. Fix: store a dockerconfigjson ({"auths":{"registry.example.com":{"auth":"<base64 of user:password>"}}}), user:password, or {"username":"...","password":"..."}`},
		{name: "no entry", image: "q.example.com/a", ref: "docker/0123456789abcdef0123456789abcdef", value: `{"auths":{"r.example.com":{"auth":"` + b64("u:s3cret") + `"}}}`,
			wantProblem: `error: vault homelab-kv.vault.azure.net, secret docker/0123456789abcdef0123456789abcdef: the dockerconfigjson has no entry for q.example.com (it has r.example.com). Fix: add an entry for q.example.com to the dockerconfigjson, or annotate the ServiceAccount with the secret that has one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im, err := ParseImage(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			exact, err := ParseMatchImages([]string{"r.example.com", "q.example.com"})
			if err != nil {
				t.Fatal(err)
			}
			got, pr, _ := answer(im, ref(tt.ref), tt.value, exact)
			problem := ""
			if pr != nil {
				problem = pr.Public()
			}
			if diff := cmp.Diff(tt.wantProblem, problem); diff != "" {
				t.Errorf("problem (-want +got):\n%s", diff)
			}
			if strings.Contains(problem, "s3cret") {
				t.Errorf("the problem quotes the value: %s", problem)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("auth (-want +got):\n%s", diff)
			}
		})
	}
}
