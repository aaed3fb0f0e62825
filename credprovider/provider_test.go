package credprovider

// End-to-end tests of the plugin against the Entra ID and Key Vault
// emulator in proxy mode: the plugin runs as a subprocess (this test
// binary, re-executed into Main) with a request on stdin, its args, and
// only HTTPS_PROXY, SSL_CERT_FILE and AZURE_AUTHORITY_HOST in its
// environment, as the kubelet runs it. The requests carry real tokens
// signed by a test issuer that the emulator federates with. Nothing is
// mocked; everything listens on loopback.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	kubeletv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/emutest"
	"github.com/kvinject/kvinject/internal/testkit/golden"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

const (
	tenantID  = "11111111-2222-3333-4444-555555555555"
	clientID  = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	namespace = "apps"
	vaultName = "homelab-kv"

	// Planted credentials: none may appear on stderr.
	mirrorPassword = "mirror-pass-clark"
	plainPassword  = "plain-pass-lois"
	jsonPassword   = "json-pass-lex"
	otherPassword  = "hub-pass-jimmy"
)

var planted = []string{mirrorPassword, plainPassword, jsonPassword, otherPassword,
	b64("mirror-user:" + mirrorPassword), b64("hub-user:" + otherPassword)}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// mirrorCred is the reference setup's mirror-registry-cred: a
// dockerconfigjson with the mirror, Docker Hub and a registry path.
var mirrorCred = `{"auths":{` +
	`"mirror.example.com:5000":{"auth":"` + b64("mirror-user:"+mirrorPassword) + `"},` +
	`"https://index.docker.io/v1/":{"auth":"` + b64("hub-user:"+otherPassword) + `"},` +
	`"ghcr.example.org/team-a":{"username":"ghcr-user","password":"` + otherPassword + `"}}}`

// execEnv makes this test binary run Main instead of the tests.
const execEnv = "KVINJECT_TEST_EXEC_CREDENTIAL_PROVIDER"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		os.Exit(Main(context.Background(), "kvinject-credential-provider", os.Args[1:],
			Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv}))
	}
	code := m.Run()
	emutest.CloseIssuer()
	os.Exit(code)
}

// startEmulator federates the identity with apps/puller only: a token of
// apps/other is refused with AADSTS700213.
func startEmulator(t *testing.T) (*azemu.Emulator, *oidctest.Issuer) {
	t.Helper()
	iss := emutest.Issuer(t)
	secret := func(name, value string) azemu.Secret {
		return azemu.Secret{Name: name, Versions: []azemu.SecretVersion{{Value: value}}}
	}
	emu := emutest.Start(t, azemu.Config{
		Tenants: []azemu.Tenant{{ID: tenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{{ClientID: clientID, Tenant: tenantID, FederatedCredentials: []azemu.FederatedCredential{
			{Name: "apps-puller", Issuer: iss.URL(), Subject: "system:serviceaccount:" + namespace + ":puller"},
		}}},
		Vaults: []azemu.Vault{{
			Name: vaultName, Tenant: tenantID,
			RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
			Secrets: []azemu.Secret{
				secret("mirror-registry-cred", mirrorCred),
				secret("plain-cred", "plain-user:"+plainPassword+"\n"),
				secret("json-cred", `{"username":"json-user","password":"`+jsonPassword+`"}`),
				secret("bundle", `{"db":"x","registry":`+mirrorCred+`}`),
			},
		}},
	})
	return emu, iss
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the plugin on one request, as the kubelet does.
func run(t *testing.T, emu *azemu.Emulator, request []byte, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = []string{execEnv + "=1", "HTTPS_PROXY=" + emu.ProxyURL(), "SSL_CERT_FILE=" + emu.CAFile(),
		spec.EnvAuthorityHost + "=https://login.microsoftonline.com/"}
	cmd.Stdin = bytes.NewReader(request)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	_ = cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatal("the plugin did not run")
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// tokenPlaceholder in a golden request stands for a token of the
// ServiceAccount it names, minted when the test runs.
var tokenPlaceholder = regexp.MustCompile(`"TOKEN ([a-z0-9-]+):([a-z0-9-]+)"`)

func requestWithToken(t *testing.T, iss *oidctest.Issuer, golden []byte) ([]byte, string) {
	t.Helper()
	m := tokenPlaceholder.FindSubmatch(golden)
	if m == nil {
		return golden, ""
	}
	tok, err := iss.ServiceAccountToken(string(m[1]), string(m[2]))
	if err != nil {
		t.Fatal(err)
	}
	return tokenPlaceholder.ReplaceAll(golden, []byte(`"`+tok+`"`)), tok
}

var traceIDs = regexp.MustCompile(`\(trace ID [0-9a-f-]+, correlation ID [0-9a-f-]+\)`)

// issuerURL is the test issuer's random port: the golden files say ISSUER.
func stable(s string, iss *oidctest.Issuer) string {
	s = traceIDs.ReplaceAllString(s, "(trace ID T, correlation ID C)")
	s = regexp.MustCompile(`exp=[0-9TZ:-]+`).ReplaceAllString(s, "exp=EXP")
	return strings.ReplaceAll(s, iss.URL(), "ISSUER")
}

// TestProvider runs each testdata/NAME.request.json and compares stdout
// with NAME.response.json, or the error line with NAME.stderr.
func TestProvider(t *testing.T) {
	emu, iss := startEmulator(t)
	args := []string{"--default-vault", vaultName, "--tenant-id", tenantID, "--match-images", "registry.example.com,mirror.example.com:5000,*.example.org,*.example.net,docker.io"}
	tests := []struct {
		name     string
		wantCode int
	}{
		{"dockerconfigjson", 0},
		{"dockerconfigjson-docker-hub", 0},
		{"dockerconfigjson-path", 0},
		{"user-password", 0},
		{"json-username-password", 0},
		{"property-of-a-json-secret", 0},
		{"secret-url-and-sa-tenant", 0},
		{"no-federated-credential", 1},
		{"secret-missing", 1},
		{"no-entry-for-registry", 1},
		{"other-path-of-registry", 1},
		{"no-token", 1},
		{"wrong-api-version", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.name+".request.json"))
			if err != nil {
				t.Fatal(err)
			}
			req, token := requestWithToken(t, iss, raw)
			r := run(t, emu, req, args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			checkNoSecrets(t, r.stderr, token)
			if strings.Contains(r.stdout, token) && token != "" {
				t.Error("stdout holds the ServiceAccount token")
			}
			if tt.wantCode == 0 {
				if r.stderr != "" {
					t.Errorf("stderr = %q, want nothing", r.stderr)
				}
				golden.Check(t, filepath.Join("testdata", tt.name+".response.json"), []byte(r.stdout))
				checkKubeletReads(t, []byte(r.stdout))
				return
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			if n := strings.Count(r.stderr, "\n"); n != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", n, r.stderr)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".stderr"), []byte(stable(r.stderr, iss)))
		})
	}
}

// checkNoSecrets fails when the error output holds a planted credential or
// anything like a token.
func checkNoSecrets(t *testing.T, stderr, token string) {
	t.Helper()
	for _, v := range planted {
		if strings.Contains(stderr, v) {
			t.Errorf("stderr holds the secret value %q:\n%s", v, stderr)
		}
	}
	if parts := strings.Split(token, "."); token != "" && (strings.Contains(stderr, token) || strings.Contains(stderr, parts[2])) {
		t.Error("stderr holds the ServiceAccount token")
	}
	if strings.Contains(stderr, "eyJ") {
		t.Errorf("stderr holds something like a JWT:\n%s", stderr)
	}
}

// checkKubeletReads decodes a response into the kubelet's own v1 type,
// refusing unknown fields as the kubelet's strict decoder does, and checks
// what the kubelet checks: apiVersion, kind and a valid cacheKeyType.
func checkKubeletReads(t *testing.T, data []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var resp kubeletv1.CredentialProviderResponse
	if err := dec.Decode(&resp); err != nil {
		t.Fatalf("the kubelet's type does not decode the response: %v", err)
	}
	if resp.APIVersion != kubeletv1.SchemeGroupVersion.String() || resp.Kind != "CredentialProviderResponse" {
		t.Errorf("apiVersion %q kind %q", resp.APIVersion, resp.Kind)
	}
	switch resp.CacheKeyType {
	case kubeletv1.ImagePluginCacheKeyType, kubeletv1.RegistryPluginCacheKeyType, kubeletv1.GlobalPluginCacheKeyType:
	default:
		t.Errorf("cacheKeyType %q is not one the kubelet accepts", resp.CacheKeyType)
	}
	if resp.CacheDuration == nil || resp.CacheDuration.Duration != DefaultCacheDuration {
		t.Errorf("cacheDuration %v, want %v", resp.CacheDuration, DefaultCacheDuration)
	}
	if len(resp.Auth) == 0 {
		t.Error("no auth in a successful response")
	}
}

// TestProviderCacheDuration: --cache-duration reaches the response, and 0
// is written (the kubelet then does not cache), not left out (the kubelet
// would then use its defaultCacheDuration).
func TestProviderCacheDuration(t *testing.T) {
	emu, iss := startEmulator(t)
	raw, err := os.ReadFile("testdata/user-password.request.json")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := requestWithToken(t, iss, raw)
	for _, tt := range []struct{ flag, want string }{{"0", `"cacheDuration": "0s"`}, {"90s", `"cacheDuration": "1m30s"`}} {
		r := run(t, emu, req, "--default-vault", vaultName, "--tenant-id", tenantID, "--cache-duration", tt.flag, "--match-images", "registry.example.com")
		if r.code != 0 || !strings.Contains(r.stdout, tt.want) {
			t.Errorf("--cache-duration %s: exit %d, stdout %s, stderr %s; want %s", tt.flag, r.code, r.stdout, r.stderr, tt.want)
		}
	}
}
