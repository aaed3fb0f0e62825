package initagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// fakeVault is a SecretGetter over a map, counting calls and the highest
// number of calls in flight. It stands in for Key Vault in tests of the
// agent's own logic; the emulator tests cover the SDK wiring.
type fakeVault struct {
	mu       sync.Mutex
	values   map[string]string // name or name/version -> value
	types    map[string]string // name -> content type, when it has one
	calls    map[string]int
	inFlight int
	maxIn    int
	delay    time.Duration
}

func (f *fakeVault) GetSecret(ctx context.Context, name, version string) (keyvault.Secret, error) {
	key := name
	if version != "" {
		key += "/" + version
	}
	f.mu.Lock()
	f.calls[key]++
	f.inFlight++
	if f.inFlight > f.maxIn {
		f.maxIn = f.inFlight
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return keyvault.Secret{}, ctx.Err()
	}
	v, ok := f.values[key]
	if !ok {
		return keyvault.Secret{}, &azcore.ResponseError{StatusCode: 404, ErrorCode: "SecretNotFound"}
	}
	return keyvault.Secret{Value: v, Version: "0123456789abcdef0123456789abcdef", ContentType: f.types[name]}, nil
}

func newFakeVault(values map[string]string) *fakeVault {
	return &fakeVault{values: values, calls: map[string]int{}}
}

func mustSpec(t *testing.T, dir string, files ...spec.File) *spec.Spec {
	t.Helper()
	s := &spec.Spec{Version: spec.Version, Vault: testVault, MountPath: dir, Files: files,
		Identity: spec.Identity{ClientID: testClient, TenantID: testTenant, TokenExpirationSeconds: 3600}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func secretFile(name, mode, ref string) spec.File {
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	r, err := spec.ParseRef(ref, testVault, cloud)
	if err != nil {
		panic(err)
	}
	return spec.File{Name: name, Mode: mode, Secret: &r}
}

func TestRunWritesAndDedupes(t *testing.T) {
	dir := t.TempDir()
	vault := newFakeVault(map[string]string{
		"app-pgsql": `{"username":"superman","password":"louiselane"}`,
		"api-key":   "s3cr3t",
	})
	s := mustSpec(t, dir,
		secretFile("username", "0400", "app-pgsql#username"),
		secretFile("password", "0400", "app-pgsql#password"),
		secretFile("key", "0444", "api-key"),
		templateFile(t, "dsn", `{{ secret "app-pgsql#username" }}:{{ secret "app-pgsql#password" }}/{{ secret "api-key" }}`),
	)
	var logs, errs bytes.Buffer
	a, err := New(Options{Spec: s, Err: &errs, Logger: testLogger(&logs),
		NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v; stderr:\n%s", err, errs.String())
	}
	want := map[string]string{"username": "superman", "password": "louiselane", "key": "s3cr3t", "dsn": "superman:louiselane/s3cr3t"}
	got := map[string]string{}
	for name := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got[name] = string(b)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"app-pgsql": 1, "api-key": 1}, vault.calls); diff != "" {
		t.Errorf("each secret fetched once (-want +got):\n%s", diff)
	}
	assertNoValues(t, logs.String()+errs.String(), "superman", "louiselane", "s3cr3t")
	if n := strings.Count(logs.String(), `"msg":"fetched secret"`); n != 2 {
		t.Errorf("%d fetch log lines, want 2:\n%s", n, logs.String())
	}
}

func TestRunConcurrencyBound(t *testing.T) {
	dir := t.TempDir()
	values := map[string]string{}
	var files []spec.File
	for i := range 50 {
		name := fmt.Sprintf("s%02d", i)
		values[name] = "v" + name
		files = append(files, secretFile(name, "0444", name))
	}
	vault := newFakeVault(values)
	vault.delay = 20 * time.Millisecond
	a, err := New(Options{Spec: mustSpec(t, dir, files...), Concurrency: 7,
		NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if vault.maxIn != 7 {
		t.Errorf("at most %d fetches ran at once, want 7", vault.maxIn)
	}
}

func TestRunProblemsWriteNothing(t *testing.T) {
	tests := []struct {
		name  string
		files func(t *testing.T) []spec.File
		want  []string
	}{
		{"missing secret and missing property", func(t *testing.T) []spec.File {
			return []spec.File{secretFile("a", "0400", "nope"), secretFile("b", "0400", "app-pgsql#user"), secretFile("c", "0400", "app-pgsql#user"),
				secretFile("ok", "0400", "app-pgsql#username"), templateFile(t, "t", `{{ secret "nope#x" }}{{ secret "app-pgsql#username" }}`)}
		}, []string{
			`error: vault homelab-kv.vault.azure.net, secret nope: no secret named "nope" in the vault (404 SecretNotFound). Fix: check the name (az keyvault secret list --vault-name homelab-kv --query [].name) and the vault; a deleted secret can be recovered with az keyvault secret recover`,
			`error: vault homelab-kv.vault.azure.net, secret app-pgsql#user, files b, c: property "user" is missing: no key "user" at the top level (it has keys "password", "username"). Fix: fix the path in the reference, or add the key to the secret`,
		}},
		{"property problems, once per reference", func(t *testing.T) []spec.File {
			return []spec.File{secretFile("b", "0400", "app-pgsql#user"), secretFile("c", "0400", "app-pgsql#user"), secretFile("d", "0400", "plain#x"),
				templateFile(t, "t", "x\n{{ secret \"app-pgsql#user\" }}")}
		}, []string{
			`error: vault homelab-kv.vault.azure.net, secret app-pgsql#user, files b, c, t: property "user" is missing: no key "user" at the top level (it has keys "password", "username"). Fix: fix the path in the reference, or add the key to the secret`,
			`error: vault homelab-kv.vault.azure.net, secret plain#x, file d: the value is not JSON (10 bytes), but property "x" was asked for. Fix: store the secret as a JSON object, or drop #x from the reference to get the whole value`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			vault := newFakeVault(map[string]string{"app-pgsql": `{"username":"superman","password":"louiselane"}`, "plain": "louiselane"})
			var errs, logs bytes.Buffer
			a, err := New(Options{Spec: mustSpec(t, dir, tt.files(t)...), Err: &errs, Logger: testLogger(&logs),
				NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Run(context.Background()); !errors.Is(err, ErrFailed) {
				t.Fatalf("Run = %v, want ErrFailed", err)
			}
			if diff := cmp.Diff(tt.want, strings.Split(strings.TrimSuffix(errs.String(), "\n"), "\n")); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			assertNoValues(t, errs.String()+logs.String(), "superman", "louiselane")
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a failed run left %d entries in the directory", len(entries))
			}
		})
	}
}

func TestRunTimeout(t *testing.T) {
	dir := t.TempDir()
	vault := newFakeVault(map[string]string{"a": "x"})
	vault.delay = time.Minute
	var errs bytes.Buffer
	a, err := New(Options{Spec: mustSpec(t, dir, secretFile("a", "0400", "a")), Err: &errs, Timeout: 100 * time.Millisecond,
		NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Run(context.Background()); !errors.Is(err, ErrFailed) {
		t.Fatalf("Run = %v, want ErrFailed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v with a 100ms timeout", d)
	}
	if !strings.Contains(errs.String(), "gave up when the agent's time limit of 100ms ran out") {
		t.Errorf("stderr = %q, want the timeout explained", errs.String())
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	good := mustSpec(t, dir, secretFile("a", "0400", "a"))
	reserved := *good
	reserved.Files = []spec.File{secretFile("..data", "0400", "a")}
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no spec", Options{}, "no spec: set KVINJECT_SPEC"},
		{"reserved file name", Options{Spec: &reserved}, `invalid KVINJECT_SPEC: file name "..data" starts with "..", which is reserved for the agent's atomic update`},
		{"concurrency", Options{Spec: good, Concurrency: 101}, "concurrency 101: want 1 to 100"},
		{"relative dir", Options{Spec: good, Dir: "x"}, `output directory "x" is not absolute`},
		{"http authority", Options{Spec: good, Env: Env{AuthorityHost: "http://login.example"}}, `AZURE_AUTHORITY_HOST "http://login.example" must be an https URL with a host and no user, query or fragment, like https://login.microsoftonline.com/`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.o)
			if err == nil || err.Error() != tt.want {
				t.Errorf("New error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestIdentityProblems(t *testing.T) {
	s := mustSpec(t, "/x", secretFile("a", "0400", "a"))
	tests := []struct {
		name string
		env  Env
		want []string
	}{
		{"agree", Env{ClientID: strings.ToUpper(testClient), TenantID: testTenant}, nil},
		{"spec fills gaps", Env{}, nil},
		{"client differs", Env{ClientID: "99999999-2222-3333-4444-555555555555"}, []string{
			`AZURE_CLIENT_ID is "99999999-2222-3333-4444-555555555555" but the spec's client id is "` + testClient + `": the pod's environment was changed after admission; delete the pod so the webhook injects it again, or fix the variable`}},
		{"tenant differs", Env{TenantID: "99999999-bbbb-cccc-dddd-eeeeeeeeeeee"}, []string{
			`AZURE_TENANT_ID is "99999999-bbbb-cccc-dddd-eeeeeeeeeeee" but the spec's tenant id is "` + testTenant + `": the pod's environment was changed after admission; delete the pod so the webhook injects it again, or fix the variable`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Options{Spec: s, Env: tt.env})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, identityProblems(a.identity, s, tt.env)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
	empty := *s
	empty.Identity = spec.Identity{}
	a, _ := New(Options{Spec: &empty})
	if got := identityProblems(a.identity, &empty, Env{}); len(got) != 2 {
		t.Errorf("no client and tenant id anywhere: %d problems, want 2: %q", len(got), got)
	}
}

func TestCheck(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(fakeJWT(`{"iss":"https://issuer.example","sub":"system:serviceaccount:app:web","aud":["api://AzureADTokenExchange"],"exp":1767225600}`)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustSpec(t, "/var/run/secrets/kvinject",
		secretFile("username", "0400", "app-pgsql#username"),
		secretFile("password", "0400", "app-pgsql#password"),
		secretFile("other", "0444", "https://other-kv.vault.azure.net/secrets/api-key/0123456789abcdef0123456789abcdef"),
		templateFile(t, "dsn", `{{ secret "app-pgsql#username" }}:{{ secret "app-pgsql#password" }}`),
	)
	var out bytes.Buffer
	a, err := New(Options{Spec: s, Out: &out, Env: Env{TokenFile: tokenFile, ClientID: testClient}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(); err != nil {
		t.Fatal(err)
	}
	want := `spec v1 is valid: 4 file(s) into /var/run/secrets/kvinject (seen by containers (all) at /var/run/secrets/kvinject)
cloud AzurePublicCloud: authority https://login.microsoftonline.com/ (instance discovery skipped), Key Vault token scope https://vault.azure.net/.default
identity: client id 11111111-2222-3333-4444-555555555555, tenant aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, token file ` + tokenFile + `
token: iss="https://issuer.example" sub="system:serviceaccount:app:web" aud="api://AzureADTokenExchange" exp=2026-01-01T00:00:00Z

would fetch 2 secret version(s), at most 50 at a time, within 2m0s:
  VAULT                       SECRET     VERSION
  homelab-kv.vault.azure.net  app-pgsql  latest
  other-kv.vault.azure.net    api-key    0123456789abcdef0123456789abcdef

would write 4 file(s) into /var/run/secrets/kvinject, all or none:
  FILE      MODE  CONTENT
  username  0400  homelab-kv.vault.azure.net app-pgsql property username
  password  0400  homelab-kv.vault.azure.net app-pgsql property password
  other     0444  other-kv.vault.azure.net api-key/0123456789abcdef0123456789abcdef (whole value)
  dsn       0444  template (1 lines) reading 2 reference(s)
                    secret "app-pgsql#password" -> homelab-kv.vault.azure.net app-pgsql property password
                    secret "app-pgsql#username" -> homelab-kv.vault.azure.net app-pgsql property username
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("check output (-want +got):\n%s", diff)
	}
}

func assertNoValues(t *testing.T, output string, values ...string) {
	t.Helper()
	for _, v := range values {
		if strings.Contains(output, v) {
			t.Errorf("output holds the secret value %q:\n%s", v, output)
		}
	}
}

func TestWriteTerminationLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "termination-log")
	writeTerminationLog(p, "error: x\n")
	if _, err := os.Stat(p); err == nil {
		t.Fatal("a missing termination log was created")
	}
	if err := os.WriteFile(p, []byte("old message that is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	line := "error: " + strings.Repeat("x", 992) + "\n" // 1000 bytes
	writeTerminationLog(p, strings.Repeat(line, 5))
	b, _ := os.ReadFile(p)
	if string(b) != strings.Repeat(line, 4) {
		t.Errorf("termination log holds %d bytes, want the 4 whole lines that fit in 4096", len(b))
	}
}
