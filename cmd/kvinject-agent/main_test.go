package main

// Integration tests of the agent binary (`kvinject-agent`, the same command as `kvinject agent`) against the Entra ID and Key Vault
// emulator in proxy mode: the agent runs as a subprocess (this test binary,
// re-executed into main) with only HTTPS_PROXY, SSL_CERT_FILE, the AZURE_*
// variables and KVINJECT_SPEC, exactly as in the init container. Nothing is
// mocked; everything listens on loopback.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/certtest"
	"github.com/kvinject/kvinject/internal/testkit/emutest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

const (
	tenantID  = "11111111-2222-3333-4444-555555555555"
	clientID  = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	noRoleID  = "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
	unknownID = "cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee"
	namespace = "apps"
	saName    = "web"

	vaultName  = "homelab-kv"
	otherVault = "other-kv"
	vaultURL   = "https://homelab-kv.vault.azure.net"
	oldVersion = "0123456789abcdef0123456789abcdef"

	// The contract's example and other planted values: none may ever
	// appear in the agent's output.
	pgValue    = `{"username":"superman","password":"louiselane"}`
	oldValue   = "old-password-clark"
	plainValue = "plain-value-lex"
	otherValue = `{"token":"kryptonite-42"}`
)

var planted = []string{"superman", "louiselane", oldValue, plainValue, "kryptonite-42"}

// execEnv makes this test binary run main() instead of the tests.
const execEnv = "KVINJECT_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execEnv) == "1" {
		main()
		return
	}
	code := m.Run()
	emutest.CloseIssuer()
	os.Exit(code)
}

func baseConfig(iss string) azemu.Config {
	fc := []azemu.FederatedCredential{{Name: "apps-web", Issuer: iss, Subject: "system:serviceaccount:" + namespace + ":" + saName}}
	return azemu.Config{
		Tenants: []azemu.Tenant{{ID: tenantID, DisplayName: "homelab"}},
		Identities: []azemu.Identity{
			{ClientID: clientID, Tenant: tenantID, FederatedCredentials: fc},
			{ClientID: noRoleID, Tenant: tenantID, FederatedCredentials: fc},
		},
		Vaults: []azemu.Vault{
			{
				Name: vaultName, Tenant: tenantID,
				RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
				Secrets: []azemu.Secret{
					{Name: "app-pgsql", Versions: []azemu.SecretVersion{
						{Version: oldVersion, Value: oldValue},
						{Value: pgValue, ContentType: "application/json"},
					}},
					{Name: "plain", Versions: []azemu.SecretVersion{{Value: plainValue}}},
				},
			},
			{
				Name: otherVault, Tenant: tenantID,
				RoleAssignments: []azemu.RoleAssignment{{ClientID: clientID, Role: azemu.RoleSecretsUser}},
				Secrets:         []azemu.Secret{{Name: "api", Versions: []azemu.SecretVersion{{Value: otherValue}}}},
			},
		},
	}
}

// harness is one emulator, one token file and one output directory.
type harness struct {
	t         testing.TB
	emu       *azemu.Emulator
	iss       *oidctest.Issuer
	dir       string
	tokenFile string
	termLog   string // stands in for /dev/termination-log
	env       map[string]string
}

func newHarness(t testing.TB, mutate ...func(*azemu.Config)) *harness {
	t.Helper()
	iss := emutest.Issuer(t)
	cfg := baseConfig(iss.URL())
	for _, m := range mutate {
		m(&cfg)
	}
	emu := emutest.Start(t, cfg)
	tmp := t.TempDir()
	h := &harness{t: t, emu: emu, iss: iss, dir: memoryDir(t), tokenFile: filepath.Join(tmp, "token"), termLog: filepath.Join(tmp, "termination-log")}
	h.writeToken(oidctest.Claims{Namespace: namespace, ServiceAccount: saName})
	h.env = map[string]string{
		"HTTPS_PROXY":              emu.ProxyURL(),
		"SSL_CERT_FILE":            emu.CAFile(),
		spec.EnvClientID:           clientID,
		spec.EnvTenantID:           tenantID,
		spec.EnvFederatedTokenFile: h.tokenFile,
		spec.EnvAuthorityHost:      "https://login.microsoftonline.com/",
	}
	return h
}

// memoryDir is the output directory: on tmpfs when the machine has
// /dev/shm, like the pod's memory-backed emptyDir, else on disk. Mode 0777
// like an emptyDir.
func memoryDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "kvinject-agent-test-")
	if err != nil {
		dir = filepath.Join(t.TempDir(), "secrets")
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeToken mints a service-account token into the token file, as the
// kubelet does for the projected volume.
func (h *harness) writeToken(c oidctest.Claims) string {
	h.t.Helper()
	tok, err := h.iss.WriteToken(h.tokenFile, c)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

var cloud, _ = spec.LookupCloud(spec.DefaultCloud)

// specOf builds the spec the webhook would, from secret-/template-
// annotations: name -> "secret:REF" or "template:TEXT", mode 0400.
func specOf(t testing.TB, files ...[2]string) *spec.Spec {
	t.Helper()
	s := &spec.Spec{Version: spec.Version, Vault: vaultURL, MountPath: spec.DefaultMountPath,
		Identity: spec.Identity{ClientID: clientID, TenantID: tenantID, TokenExpirationSeconds: 3600}}
	for _, f := range files {
		file := spec.File{Name: f[0], Mode: "0400"}
		kind, val, _ := strings.Cut(f[1], ":")
		switch kind {
		case "secret":
			r, err := spec.ParseRef(val, vaultURL, cloud)
			if err != nil {
				t.Fatal(err)
			}
			file.Secret = &r
		case "template":
			refs, err := spec.ParseTemplate(val, vaultURL, cloud)
			if err != nil {
				t.Fatal(err)
			}
			file.Template, file.Refs = val, refs
			file.Mode = "0444"
		default:
			t.Fatalf("bad file %q", f)
		}
		s.Files = append(s.Files, file)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

// contractSpec is the contract's example: username and password from the
// JSON secret app-pgsql.
func contractSpec(t testing.TB) *spec.Spec {
	return specOf(t, [2]string{"username", "secret:app-pgsql#username"}, [2]string{"password", "secret:app-pgsql#password"})
}

type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
	maxRSSKiB      int64
}

// problems are the diagnostic lines, with Entra's per-request trace and
// correlation ids replaced.
func (r result) problems() []string {
	var out []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "error: ") {
			out = append(out, traceIDs.ReplaceAllString(l, "(trace ID T, correlation ID C)"))
		}
	}
	return out
}

// errorLines are the problem lines as printed.
func (r result) errorLines() string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(r.stderr, "\n") {
		if strings.HasPrefix(l, "error: ") {
			b.WriteString(l)
		}
	}
	return b.String()
}

var peakRSS = regexp.MustCompile(`"peakRSSKiB":(\d+)`)

var traceIDs = regexp.MustCompile(`\(trace ID [0-9a-f-]+, correlation ID [0-9a-f-]+\)`)

// agentBinary is the program run as the agent: KVINJECT_AGENT_BIN (e.g. a
// CGO_ENABLED=0 build, for RSS) or this test binary re-executed into main.
func agentBinary(t testing.TB) (string, []string) {
	if b := os.Getenv("KVINJECT_AGENT_BIN"); b != "" {
		return b, nil
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe, []string{execEnv + "=1"}
}

// run runs `kvinject-agent --dir DIR ARGS` with the spec and the harness's
// environment, and nothing else from the test's environment.
func (h *harness) run(s *spec.Spec, args ...string) result {
	h.t.Helper()
	raw := ""
	if s != nil {
		var err error
		if raw, err = s.Encode(); err != nil {
			h.t.Fatal(err)
		}
	}
	return h.runRaw(raw, args...)
}

func (h *harness) runRaw(rawSpec string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin, env := agentBinary(h.t)
	if err := os.WriteFile(h.termLog, nil, 0o644); err != nil { // the kubelet's empty file
		h.t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--dir", h.dir, "--termination-log", h.termLog}, args...)...)
	env = append(env, spec.EnvSpec+"="+rawSpec)
	for k, v := range h.env {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	if cmd.ProcessState == nil {
		h.t.Fatalf("agent did not run: %v", err)
	}
	r.code = cmd.ProcessState.ExitCode()
	// getrusage's maxrss would include this process's memory (exec keeps
	// the high-water mark of the vforked child): the agent logs its own.
	if m := peakRSS.FindStringSubmatch(r.stderr); m != nil {
		r.maxRSSKiB, _ = strconv.ParseInt(m[1], 10, 64)
	}
	h.checkNoSecrets(r)
	return r
}

// checkNoSecrets fails when any output holds a planted value or a token.
func (h *harness) checkNoSecrets(r result) {
	h.t.Helper()
	out := r.stdout + r.stderr
	for _, v := range planted {
		if strings.Contains(out, v) {
			h.t.Errorf("the agent's output holds the secret value %q:\n%s", v, out)
		}
	}
	if tok, err := os.ReadFile(h.tokenFile); err == nil && len(tok) > 20 {
		parts := strings.Split(string(tok), ".")
		if strings.Contains(out, string(tok)) || (len(parts) == 3 && strings.Contains(out, parts[2])) {
			h.t.Error("the agent's output holds the service-account token")
		}
	}
	if strings.Contains(out, "eyJ") { // any JWT: assertion or access token
		h.t.Errorf("the agent's output holds something like a JWT:\n%s", out)
	}
}

// files reads the directory the way the app does: the visible names,
// through their symlinks, with their modes.
func (h *harness) files() map[string]string {
	h.t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		p := filepath.Join(h.dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			h.t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			h.t.Fatal(err)
		}
		out[e.Name()] = fmt.Sprintf("%04o %s", st.Mode().Perm(), b)
	}
	return out
}

// entries lists everything in the output directory, hidden names too.
func (h *harness) entries() []string {
	h.t.Helper()
	var names []string
	err := filepath.WalkDir(h.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != h.dir {
			rel, _ := filepath.Rel(h.dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func (h *harness) requests(c azemu.Class) int64 { return h.emu.Stats().Classes[c].Requests }

func TestAgentContractExample(t *testing.T) {
	h := newHarness(t)
	r := h.run(contractSpec(t))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	want := map[string]string{"username": "0400 superman", "password": "0400 louiselane"}
	if diff := cmp.Diff(want, h.files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	// One structured line per fetched secret, without the value.
	if n := strings.Count(r.stderr, `"msg":"fetched secret","vault":"homelab-kv.vault.azure.net","name":"app-pgsql","version":"`); n != 1 {
		t.Errorf("want one fetch log line for app-pgsql, got %d:\n%s", n, r.stderr)
	}
	st := h.emu.Stats()
	got := map[azemu.Class]int64{}
	for c, cs := range st.Classes {
		if c != azemu.ClassIssuerDiscovery && c != azemu.ClassIssuerJWKS { // the emulator's own fetches
			got[c] = cs.Requests
		}
	}
	wantReq := map[azemu.Class]int64{azemu.ClassOIDCMetadata: 1, azemu.ClassToken: 1, azemu.ClassKVGet: 1}
	if diff := cmp.Diff(wantReq, got); diff != "" {
		t.Errorf("requests by class: no instance discovery, no Key Vault challenge (-want +got):\n%s", diff)
	}
	if st.ProxyConnects != 2 {
		t.Errorf("%d CONNECT tunnels, want 2 (one to Entra ID, one to the vault)", st.ProxyConnects)
	}
}

// TestAgentChallengeFallback: a vault outside the cloud's vault domain gets
// no token up front; the SDK's challenge flow still works.
func TestAgentChallengeFallback(t *testing.T) {
	h := newHarness(t)
	r := h.run(contractSpec(t), "--cloud", "AzureChinaCloud") // AZURE_AUTHORITY_HOST stays public
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(map[string]string{"username": "0400 superman", "password": "0400 louiselane"}, h.files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if n := h.requests(azemu.ClassKVChallenge); n != 1 {
		t.Errorf("%d Key Vault challenges, want 1", n)
	}
}

func TestAgentSecrets(t *testing.T) {
	tests := []struct {
		name  string
		files [][2]string
		want  map[string]string
	}{
		{"whole value and a version", [][2]string{
			{"pg.json", "secret:app-pgsql"},
			{"old", "secret:app-pgsql/" + oldVersion},
			{"plain", "secret:plain"},
		}, map[string]string{"pg.json": "0400 " + pgValue, "old": "0400 " + oldValue, "plain": "0400 " + plainValue}},
		{"a secret URL from a second vault", [][2]string{
			{"token", "secret:https://other-kv.vault.azure.net/secrets/api#token"},
			{"username", "secret:app-pgsql#username"},
		}, map[string]string{"token": "0400 kryptonite-42", "username": "0400 superman"}},
		{"templates", [][2]string{
			{"dsn", `template:postgres://{{ secret "app-pgsql#username" }}:{{ secret "app-pgsql#password" | urlquery }}@db/app`},
			{"env", "template:API={{ secret \"https://other-kv.vault.azure.net/secrets/api#token\" | quote }}\nOLD={{ secret \"app-pgsql/" + oldVersion + "\" | b64enc }}\n"},
			{"password", "secret:app-pgsql#password"},
		}, map[string]string{
			"dsn":      "0444 postgres://superman:louiselane@db/app",
			"env":      "0444 API=\"kryptonite-42\"\nOLD=b2xkLXBhc3N3b3JkLWNsYXJr\n",
			"password": "0400 louiselane",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			r := h.run(specOf(t, tt.files...))
			if r.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if diff := cmp.Diff(tt.want, h.files()); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAgentDiagnostics(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	exp := func(c oidctest.Claims) string { return c.Expiry.UTC().Format(time.RFC3339) }
	fresh := oidctest.Claims{Namespace: namespace, ServiceAccount: saName, IssuedAt: now, Expiry: now.Add(time.Hour)}
	where := "error: vault homelab-kv.vault.azure.net, secret app-pgsql: "
	iss := emutest.Issuer(t).URL()
	claims := func(c oidctest.Claims) string {
		if c.Issuer == "" {
			c.Issuer = iss
		}
		if c.Subject == "" {
			c.Subject = "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount
		}
		aud := "api://AzureADTokenExchange"
		if len(c.Audience) > 0 {
			aud = strings.Join(c.Audience, ",")
		}
		return fmt.Sprintf(`the token has iss=%q sub=%q aud=%q exp=%s`, c.Issuer, c.Subject, aud, exp(c))
	}
	fedCred := func(issuer, subject string) string {
		return fmt.Sprintf(`az identity federated-credential create --identity-name <identity> --resource-group <group> --name kvinject --issuer %q --subject %q --audiences api://AzureADTokenExchange`, issuer, subject)
	}
	wrongIss, wrongAud, wrongSub, expired, unreachable := fresh, fresh, fresh, fresh, fresh
	wrongIss.Issuer = "https://issuer.example.com/other-cluster"
	wrongAud.Audience = []string{"api://SomethingElse"}
	wrongSub.Namespace = "other"
	expired.IssuedAt, expired.Expiry = now.Add(-3*time.Hour), now.Add(-2*time.Hour)
	unreachable.Issuer = "https://127.0.0.1:1/unreachable"
	const rbacID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/azemu/providers/microsoft.keyvault/vaults/homelab-kv"
	const rbacScope = "$(az keyvault show --name homelab-kv --query id -o tsv)"

	tests := []struct {
		name   string
		config func(*azemu.Config)
		token  oidctest.Claims
		env    map[string]string
		files  [][2]string
		want   []string
	}{
		{name: "AADSTS700211 issuer", token: wrongIss, want: []string{
			where + "sign-in failed: AADSTS700211: no federated credential of client id " + clientID + " trusts the token's issuer; " + claims(wrongIss) + " (trace ID T, correlation ID C). " +
				"Fix: add a federated credential whose issuer is exactly the token's iss (case and trailing slash matter): " + fedCred(wrongIss.Issuer, "system:serviceaccount:apps:web"),
		}},
		{name: "AADSTS700212 audience", token: wrongAud, want: []string{
			where + "sign-in failed: AADSTS700212: no federated credential of client id " + clientID + " accepts the token's audience; " + claims(wrongAud) + " (trace ID T, correlation ID C). " +
				"Fix: the federated credential's audience must be api://AzureADTokenExchange, the audience kvinject requests for the projected token",
		}},
		{name: "AADSTS700213 subject", token: wrongSub, want: []string{
			where + "sign-in failed: AADSTS700213: no federated credential of client id " + clientID + " matches the token's subject; " + claims(wrongSub) + " (trace ID T, correlation ID C). " +
				"Fix: the federated credential's subject must be exactly the pod's system:serviceaccount:<namespace>:<serviceaccount>: " + fedCred(iss, "system:serviceaccount:other:web"),
		}},
		{name: "AADSTS700016 unknown client id", env: map[string]string{spec.EnvClientID: unknownID}, want: []string{
			where + "sign-in failed: AADSTS700016: Entra ID has no application with client id " + unknownID + " in tenant " + tenantID + " (trace ID T, correlation ID C). " +
				"Fix: check the ServiceAccount annotation azure.workload.identity/client-id or the pod annotation kvinject.io/client-id (the client id of the managed identity or app registration), and the tenant id",
		}},
		{name: "AADSTS700024 expired token", token: expired, want: []string{
			where + "sign-in failed: AADSTS700024: the service-account token is not within its valid time range (agent clock NOW; " + claims(expired) + ") (trace ID T, correlation ID C). " +
				"Fix: check the node's clock (NTP) for skew; if the token expired, the kubelet did not refresh it: delete the pod so it gets a fresh token",
		}},
		{name: "AADSTS50166 issuer not reachable", token: unreachable,
			config: func(c *azemu.Config) {
				c.Identities[0].FederatedCredentials = append(c.Identities[0].FederatedCredentials,
					azemu.FederatedCredential{Name: "private", Issuer: unreachable.Issuer, Subject: "system:serviceaccount:apps:web"})
			},
			want: []string{
				where + "sign-in failed: AADSTS50166: Entra ID could not fetch the token issuer's OIDC discovery document or JWKS; " + claims(unreachable) + " (trace ID T, correlation ID C). " +
					"Fix: https://127.0.0.1:1/unreachable/.well-known/openid-configuration and the jwks_uri it names must be public: reachable from the internet over HTTPS with a publicly trusted certificate and no authentication, " +
					"e.g. a static website holding the discovery document and JWKS, as in the reference setup",
			}},
		{name: "403 ForbiddenByRbac", env: map[string]string{spec.EnvClientID: noRoleID}, want: []string{
			where + "Key Vault refused to read the secret (403 Forbidden ForbiddenByRbac): client id " + noRoleID + " has no role that allows Microsoft.KeyVault/vaults/secrets/getSecret/action (the vault's resource id is " + rbacID + "). " +
				"Fix: assign the role \"Key Vault Secrets User\" to client id " + noRoleID + " at scope " + rbacScope + " (the vault, or one secret below it): " +
				"az role assignment create --role \"Key Vault Secrets User\" --assignee " + noRoleID + " --scope " + rbacScope + "; role assignments take a few minutes to apply",
		}},
		{name: "404 name and version", files: [][2]string{{"a", "secret:no-such-secret"}, {"b", "secret:app-pgsql/fedcba9876543210fedcba9876543210#username"}, {"c", "secret:app-pgsql#username"}}, want: []string{
			"error: vault homelab-kv.vault.azure.net, secret no-such-secret: no secret named \"no-such-secret\" in the vault (404 SecretNotFound). " +
				"Fix: check the name (az keyvault secret list --vault-name homelab-kv --query [].name) and the vault; a deleted secret can be recovered with az keyvault secret recover",
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql/fedcba9876543210fedcba9876543210: secret \"app-pgsql\" has no version fedcba9876543210fedcba9876543210 in the vault (404 SecretNotFound). " +
				"Fix: check the versions (az keyvault secret list-versions --vault-name homelab-kv --name app-pgsql --query [].id), or drop the version to read the latest",
		}},
		{name: "property missing and value not JSON", files: [][2]string{
			{"user", "secret:app-pgsql#user"}, {"pass", "secret:plain#password"}, {"dsn", `template:{{ secret "app-pgsql#db.host" }}`}, {"ok", "secret:app-pgsql#username"},
		}, want: []string{
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql#user, file user: property \"user\" is missing: no key \"user\" at the top level (it has keys \"password\", \"username\"). " +
				"Fix: fix the path in the reference, or add the key to the secret",
			"error: vault homelab-kv.vault.azure.net, secret plain#password, file pass: the value is not JSON (15 bytes), but property \"password\" was asked for. " +
				"Fix: store the secret as a JSON object, or drop #password from the reference to get the whole value",
			"error: vault homelab-kv.vault.azure.net, secret app-pgsql#db.host, file dsn: in the template, line 1, column 3: property \"db.host\" is missing: no key \"db\" at the top level (it has keys \"password\", \"username\"). " +
				"Fix: fix the path in the reference, or add the key to the secret",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mut []func(*azemu.Config)
			if tt.config != nil {
				mut = append(mut, tt.config)
			}
			h := newHarness(t, mut...)
			if tt.token.Namespace != "" {
				h.writeToken(tt.token)
			}
			maps(h.env, tt.env)
			s := contractSpec(t)
			if tt.files != nil {
				s = specOf(t, tt.files...)
			}
			s.Identity = spec.Identity{} // the environment decides
			r := h.run(s)
			if r.code != 1 {
				t.Errorf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
			}
			got := r.problems()
			for i := range got {
				got[i] = agentClock.ReplaceAllString(got[i], "agent clock NOW;")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s\nstderr:\n%s", diff, r.stderr)
			}
			if e := h.entries(); len(e) != 0 {
				t.Errorf("a failed run left %q in the directory", e)
			}
			// The same lines are the termination message, less what only
			// the log may say: other key names, the vault's resource id.
			tl, err := os.ReadFile(h.termLog)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(logOnly.ReplaceAllString(r.errorLines(), ""), string(tl)); diff != "" {
				t.Errorf("termination message (-want +got):\n%s", diff)
			}
			for _, private := range []string{"/subscriptions/", "it has keys", `"password", "username"`} {
				if strings.Contains(string(tl), private) {
					t.Errorf("termination message says %q:\n%s", private, tl)
				}
			}
		})
	}
}

// logOnly matches the parts of a problem line that only the container log
// holds (keyvault.Problem.Detail).
var logOnly = regexp.MustCompile(` \((it has [^)]*|the vault's resource id is [^)]*)\)`)

// withoutLogs drops the structured (JSON) log lines.
func withoutLogs(stderr string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "{") {
			b.WriteString(l)
		}
	}
	return b.String()
}

var agentClock = regexp.MustCompile(`agent clock [0-9TZ:-]+;`)

func maps(dst, src map[string]string) {
	for k, v := range src {
		dst[k] = v
	}
}

func TestAgentSetupErrors(t *testing.T) {
	h := newHarness(t)
	mismatch := contractSpec(t)
	mismatch.Identity.ClientID = noRoleID
	raw, err := mismatch.Encode()
	if err != nil {
		t.Fatal(err)
	}
	good, _ := contractSpec(t).Encode()
	tests := []struct {
		name     string
		raw      string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"client id disagrees with the spec", raw, nil, nil, 1,
			`error: AZURE_CLIENT_ID is "` + clientID + `" but the spec's client id is "` + noRoleID + `": the pod's environment was changed after admission; delete the pod so the webhook injects it again, or fix the variable` + "\n"},
		{"unknown spec version", strings.Replace(good, `"version":"v1"`, `"version":"v2"`, 1), nil, nil, 2,
			`error: KVINJECT_SPEC has version "v2", this agent reads "v1": run the agent image that matches the webhook: unsupported spec version` + "\n"},
		{"no spec", "", nil, nil, 2,
			"error: KVINJECT_SPEC is not set: the agent runs in the kvinject-agent init container the webhook adds, which sets it\n"},
		// A cloud is parsed as the flag is (spec.Cloud is the flag.Value of
		// every --cloud); the usage follows, as for any bad flag.
		{"bad cloud", good, nil, []string{"--cloud", "Mars"}, 2,
			`invalid value "Mars" for flag -cloud: unknown cloud "Mars" (want one of AzureChinaCloud, AzurePublicCloud, AzureUSGovernment)` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.runRaw(tt.raw, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d", r.code, tt.wantCode)
			}
			got := withoutLogs(r.stderr)
			if usage := strings.Index(got, "\nUsage: "); usage >= 0 {
				got = got[:usage+1] // a bad flag's usage text
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("stderr without log lines (-want +got):\n%s", diff)
			}
		})
	}
	if n := h.emu.Stats().Connections; n != 0 {
		t.Errorf("setup errors made %d connections, want none", n)
	}
}

func TestAgentCheck(t *testing.T) {
	h := newHarness(t)
	r := h.run(specOf(t, [2]string{"username", "secret:app-pgsql#username"},
		[2]string{"dsn", `template:{{ secret "app-pgsql#username" }}@{{ secret "https://other-kv.vault.azure.net/secrets/api#token" }}`}), "--check")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"would fetch 2 secret version(s)",
		"homelab-kv.vault.azure.net  app-pgsql  latest",
		"other-kv.vault.azure.net    api        latest",
		"username  0400  homelab-kv.vault.azure.net app-pgsql property username",
		`secret "https://other-kv.vault.azure.net/secrets/api#token" -> other-kv.vault.azure.net api property token`,
		`token: iss="` + h.iss.URL() + `" sub="system:serviceaccount:apps:web"`,
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--check output lacks %q:\n%s", want, r.stdout)
		}
	}
	if n := h.emu.Stats().Connections; n != 0 {
		t.Errorf("--check made %d connections, want none", n)
	}
	if e := h.entries(); len(e) != 0 {
		t.Errorf("--check wrote %q", e)
	}
}

func TestAgentThrottling(t *testing.T) {
	t.Run("429s that recover", func(t *testing.T) {
		h := newHarness(t)
		h.emu.FailNext(azemu.ClassKVGet, 2, azemu.Fault{Kind: azemu.FaultThrottle, RetryAfter: time.Second})
		r := h.run(contractSpec(t))
		if r.code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		if diff := cmp.Diff(map[string]string{"username": "0400 superman", "password": "0400 louiselane"}, h.files()); diff != "" {
			t.Errorf("files (-want +got):\n%s", diff)
		}
		st := h.emu.Stats()
		if st.Faults[azemu.FaultThrottle] != 2 || st.Classes[azemu.ClassKVGet].Status[200] != 1 {
			t.Errorf("want 2 throttled tries and one success, got faults %v, kv-get statuses %v", st.Faults, st.Classes[azemu.ClassKVGet].Status)
		}
		if r.elapsed < 2*time.Second {
			t.Errorf("finished in %v: Retry-After: 1 was not honoured twice", r.elapsed)
		}
	})
	t.Run("a 429 storm until the deadline", func(t *testing.T) {
		h := newHarness(t)
		h.emu.FailNext(azemu.ClassKVGet, 1000, azemu.Fault{Kind: azemu.FaultThrottle, RetryAfter: time.Second})
		r := h.run(contractSpec(t), "--timeout", "2500ms")
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		if r.elapsed > 10*time.Second {
			t.Errorf("the agent ran %v with --timeout 2.5s", r.elapsed)
		}
		got := r.problems()
		want := regexp.MustCompile(`^error: vault homelab-kv\.vault\.azure\.net, secret app-pgsql: gave up when the agent's time limit of 2\.5s ran out after [2-4] attempts; last answer 429 Throttled\. Fix: if Key Vault is throttling \(429\) or unavailable`)
		if len(got) != 1 || !want.MatchString(got[0]) {
			t.Errorf("problems = %q, want one matching %s", got, want)
		}
		if e := h.entries(); len(e) != 0 {
			t.Errorf("a failed run left %q", e)
		}
	})
}

func TestAgentEntraTimeout(t *testing.T) {
	h := newHarness(t)
	h.emu.FailNext(azemu.ClassToken, 1000, azemu.Fault{Kind: azemu.FaultUnavailable, RetryAfter: time.Second})
	r := h.run(contractSpec(t), "--timeout", "1500ms")
	want := []string{"error: vault homelab-kv.vault.azure.net, secret app-pgsql: gave up when the agent's time limit of 1.5s ran out while talking to login.microsoftonline.com. " +
		"Fix: check egress to login.microsoftonline.com:443 (network policy, proxy, firewall), or raise --timeout"}
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if diff := cmp.Diff(want, r.problems()); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if e := h.entries(); len(e) != 0 {
		t.Errorf("a failed run left %q", e)
	}
}

func TestAgentFiftySecrets(t *testing.T) {
	h := newHarness(t)
	var files [][2]string
	want := map[string]string{}
	for i := range 50 {
		name := fmt.Sprintf("s%02d", i)
		if _, err := h.emu.SetSecret(vaultName, name, "value-"+name, ""); err != nil {
			t.Fatal(err)
		}
		files = append(files, [2]string{name, "secret:" + name})
		want[name] = "0400 value-" + name
	}
	r := h.run(specOf(t, files...))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(want, h.files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	st := h.emu.Stats()
	if got := st.Classes[azemu.ClassKVGet].Requests; got != 50 {
		t.Errorf("%d secret GETs, want 50", got)
	}
	if st.ProxyConnects != 2 || st.Connections != 2 {
		t.Errorf("%d tunnels and %d TLS connections, want 2 each: one HTTP/2 connection per host", st.ProxyConnects, st.Connections)
	}
}

// TestAgentTokenChangesBetweenRuns is the init container restarted by the
// kubelet after it refreshed the projected token: the first run fails on
// an expired token and writes nothing, the second reads the new token.
func TestAgentTokenChangesBetweenRuns(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	h.writeToken(oidctest.Claims{Namespace: namespace, ServiceAccount: saName, IssuedAt: now.Add(-3 * time.Hour), Expiry: now.Add(-2 * time.Hour)})
	r := h.run(contractSpec(t))
	if r.code != 1 || len(r.problems()) != 1 || !strings.Contains(r.problems()[0], "AADSTS700024") {
		t.Fatalf("first run: exit %d, problems %q; want AADSTS700024", r.code, r.problems())
	}
	if e := h.entries(); len(e) != 0 {
		t.Fatalf("the failed run left %q", e)
	}
	h.writeToken(oidctest.Claims{Namespace: namespace, ServiceAccount: saName})
	r = h.run(contractSpec(t))
	if r.code != 0 {
		t.Fatalf("second run: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(map[string]string{"username": "0400 superman", "password": "0400 louiselane"}, h.files()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	// A third run with another set replaces the files atomically and
	// leaves one data directory.
	r = h.run(specOf(t, [2]string{"password", "secret:app-pgsql#password"}))
	if r.code != 0 {
		t.Fatalf("third run: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff(map[string]string{"password": "0400 louiselane"}, h.files()); diff != "" {
		t.Errorf("files after the third run (-want +got):\n%s", diff)
	}
	var dataDirs int
	for _, e := range h.entries() {
		if strings.HasPrefix(e, "..kvinject_") && !strings.Contains(e, "/") {
			dataDirs++
		}
	}
	if dataDirs != 1 {
		t.Errorf("%d data directories, want 1: %q", dataDirs, h.entries())
	}
}

// TestAgentCertificate: the agent binary, through the emulator and the
// SDK, splits a certificate object's secret into key and chain files; a
// password-protected bundle is one problem line and no file.
func TestAgentCertificate(t *testing.T) {
	chain, err := certtest.NewChain(certtest.EC, "web.example")
	if err != nil {
		t.Fatal(err)
	}
	good, err := certtest.PFX(pkcs12.LegacyDES, "", chain.Leaf.Key, chain.Leaf.Cert, chain.Intermediate.Cert)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := certtest.PFX(pkcs12.Modern2023, "hunter2", chain.Leaf.Key, chain.Leaf.Cert)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	for name, value := range map[string]string{"web-cert": good, "locked-cert": locked} {
		if _, err := h.emu.AddSecretVersion(vaultName, name, azemu.SecretVersion{Value: value, ContentType: spec.ContentTypePKCS12, Certificate: true}); err != nil {
			t.Fatal(err)
		}
	}
	r := h.run(specOf(t, [2]string{"tls.key", "secret:web-cert#key"}, [2]string{"tls.crt", "secret:web-cert#fullchain"}))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	files := h.files()
	pair, err := tls.X509KeyPair([]byte(strings.TrimPrefix(files["tls.crt"], "0400 ")), []byte(strings.TrimPrefix(files["tls.key"], "0400 ")))
	if err != nil {
		t.Fatalf("tls.crt and tls.key are not a key pair: %v", err)
	}
	if len(pair.Certificate) != 2 || !bytes.Equal(pair.Certificate[0], chain.Leaf.Cert.Raw) || !bytes.Equal(pair.Certificate[1], chain.Intermediate.Cert.Raw) {
		t.Errorf("tls.crt is not the leaf then the intermediate")
	}
	if got := h.requests(azemu.ClassKVGet); got != 1 {
		t.Errorf("%d secret GETs, want 1 for both forms", got)
	}

	h = newHarness(t)
	if _, err := h.emu.AddSecretVersion(vaultName, "locked-cert", azemu.SecretVersion{Value: locked, ContentType: spec.ContentTypePKCS12, Certificate: true}); err != nil {
		t.Fatal(err)
	}
	r = h.run(specOf(t, [2]string{"tls.key", "secret:locked-cert#key"}, [2]string{"tls.crt", "secret:locked-cert#cert"}))
	want := []string{"error: vault homelab-kv.vault.azure.net, secret locked-cert, files tls.key, tls.crt: the PKCS#12 bundle is protected by a password. " +
		"Fix: import the certificate into Key Vault without a password (Key Vault keeps its own PFX password-less)"}
	if diff := cmp.Diff(want, r.problems()); r.code == 0 || diff != "" {
		t.Errorf("exit %d, problems (-want +got):\n%s", r.code, diff)
	}
	if len(h.entries()) != 0 {
		t.Errorf("files written: %v", h.entries())
	}
}
