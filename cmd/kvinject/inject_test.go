package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/internal/testkit/golden"
)

func runCommand(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errb, getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

func TestInject(t *testing.T) {
	flags := []string{"--agent-image", "kvinject:v1", "--tenant-id", "11111111-2222-3333-4444-555555555555", "--sa-client-id", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
	tests := []struct {
		name, in string
		stdin    bool
		wantCode int
		wantErr  string
		extra    []string
	}{
		{name: "workloads", in: "testdata/inject/workloads.yaml"},
		{name: "stdin", in: "testdata/inject/workloads.yaml", stdin: true},
		{name: "init containers, several containers, Jobs, CronJobs", in: "testdata/inject/init-containers.yaml"},
		{name: "refresh sidecar", in: "testdata/inject/refresh.yaml", extra: []string{"--kube-version", "1.29"}},
		{name: "refresh before native sidecars", in: "testdata/inject/refresh-old-cluster.yaml", extra: []string{"--kube-version", "v1.28.15"}, wantCode: 1,
			wantErr: "Deployment/dbreaderapp: denied: kvinject: kvinject.io/refresh: the refresh sidecar is a native sidecar, which needs Kubernetes 1.29 or newer, and this cluster runs 1.28: remove the annotation (the files are then written once, when the pod starts)\nkvinject inject: 1 object(s) denied\n"},
		{name: "env from Key Vault", in: "testdata/inject/env.yaml"},
		{name: "env before env files, no entrypoint", in: "testdata/inject/env-old-cluster.yaml", extra: []string{"--kube-version", "v1.33.5"}, wantCode: 1,
			wantErr: "Deployment/dbreaderapp: denied: kvinject: container \"secret-reader\" has no command, so the exec wrapper that delivers its env variables needs kvinject.io/entrypoint-secret-reader (its image's ENTRYPOINT followed by its CMD, a JSON array): the webhook never asks a registry; add it with `kvinject entrypoint --container secret-reader mirror-registry.alishomelab.local:8443/docker/dbreader:v1`\nkvinject inject: 1 object(s) denied\n"},
		{name: "env before env files: the exec wrapper", in: "testdata/inject/env-exec.yaml", extra: []string{"--kube-version", "v1.33.5"},
			wantErr: "Deployment/dbreaderapp: warning: kvinject.io/env-<VAR>: delivered through the exec wrapper /var/run/kvinject.io/bin/kvinject-exec, which becomes the command of the containers that get them and execs their program (the webhook's --env-delivery auto; this cluster cannot be shown to keep fileKeyRef): a shell opened with kubectl exec does not have their values\n"},
		{name: "fileKeyRef forced before env files", in: "testdata/inject/env-old-cluster.yaml", extra: []string{"--kube-version", "v1.33.5", "--env-delivery", "file-key-ref"}, wantCode: 1,
			wantErr: "Deployment/dbreaderapp: denied: kvinject: kvinject.io/env-PASSWORD: environment variables from a file (fileKeyRef) need Kubernetes 1.35 or newer, and this cluster runs 1.33: deliver the value as a file instead, kvinject.io/secret-<file>: \"app-pgsql#password\", and have the app read it; " +
				"kvinject.io/env-USERNAME: environment variables from a file (fileKeyRef) need Kubernetes 1.35 or newer, and this cluster runs 1.33: deliver the value as a file instead, kvinject.io/secret-<file>: \"app-pgsql#username\", and have the app read it\nkvinject inject: 1 object(s) denied\n"},
		{name: "cache", in: "testdata/inject/cache.yaml",
			extra: []string{"--cache-url", "https://kvinject-cache.kvinject-system.svc.cluster.local.", "--cache-ca-file", "../../webhook/testdata/cache-ca.pem", "--cache-by-default"}},
		{name: "cache on a cluster without one", in: "testdata/inject/cache-none.yaml", wantCode: 1,
			wantErr: "Deployment/reader-cache: warning: kvinject.io/cache: \"true\", but this cluster runs no kvinject cache (the webhook has no --cache-url): the pod reads from Azure directly\n" +
				"Deployment/reader-cache-required: denied: kvinject: kvinject.io/cache: \"required\" needs the cluster cache, and this cluster runs none (the webhook has no --cache-url): use \"true\", which reads from Azure directly where no cache runs, or remove the annotation\nkvinject inject: 1 object(s) denied\n"},
		{name: "denied", in: "testdata/inject/denied.yaml", wantCode: 1,
			wantErr: "Deployment/dbreaderapp: denied: kvinject: kvinject.io/secrets-password: unknown annotation, did you mean kvinject.io/secret-password?; " +
				"kvinject.io/perms-username: mode \"0644\" grants more than read: use only 4s and 0s, e.g. 0400, 0440, 0444\nkvinject inject: 1 object(s) denied\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"inject", "-f", tt.in}, flags...), tt.extra...)
			stdin := ""
			if tt.stdin {
				b, err := os.ReadFile(tt.in)
				if err != nil {
					t.Fatal(err)
				}
				args[2], stdin = "-", string(b)
			}
			code, out, errOut := runCommand(t, stdin, args...)
			if code != tt.wantCode || errOut != tt.wantErr {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			golden.Check(t, strings.TrimSuffix(tt.in, ".yaml")+".out.yaml", []byte(out))
		})
	}
}

// TestInjectCacheFlags: the cache flags are checked together before any
// input is read.
func TestInjectCacheFlags(t *testing.T) {
	base := []string{"inject", "-f", "testdata/inject/cache.yaml", "--agent-image", "kvinject:v1"}
	const url, ca = "https://kvinject-cache.kvinject-system.svc.cluster.local.", "../../webhook/testdata/cache-ca.pem"
	for _, tt := range []struct {
		name    string
		flags   []string
		wantErr string
	}{
		{"by default without a cache", []string{"--cache-by-default"},
			"kvinject inject: --cache-by-default needs --cache-url: there is no cache to use\n"},
		{"a URL without a CA", []string{"--cache-url", url},
			"kvinject inject: --cache-url needs --cache-ca-file: the agent trusts the cache's certificate through that CA bundle alone\n"},
		{"a CA without a URL", []string{"--cache-ca-file", ca},
			"kvinject inject: --cache-ca-file needs --cache-url: it is the CA of the cache there\n"},
		{"a CA file that is missing", []string{"--cache-url", url, "--cache-ca-file", "testdata/inject/nope.pem"},
			"kvinject inject: --cache-ca-file: open testdata/inject/nope.pem: no such file or directory\n"},
		{"a CA file that is not PEM", []string{"--cache-url", url, "--cache-ca-file", "testdata/inject/cache.yaml"},
			"kvinject inject: --cache-ca-file: the CA bundle holds text that is not PEM\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCommand(t, "", append(base, tt.flags...)...)
			if code != 2 || out != "" || errOut != tt.wantErr {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2, nothing, %q", code, out, errOut, tt.wantErr)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := runCommand(t, "", "nope"); code != 2 || !strings.Contains(errOut, `unknown command "nope"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCommand(t, "", "inject"); code != 2 || !strings.Contains(errOut, "Usage: kvinject inject -f FILE|-") {
		t.Errorf("inject without -f: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCommand(t, "", "webhook", "--cloud", "Mars"); code != 2 || !strings.Contains(errOut, `unknown cloud "Mars"`) {
		t.Errorf("webhook with a bad cloud: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCommand(t, "", "webhook", "--agent-image", "i", "--cache-url", "https://c", "--cache-ca-file", "testdata/inject/nope.pem"); code != 2 ||
		errOut != "kvinject webhook: --cache-ca-file: open testdata/inject/nope.pem: no such file or directory\n" {
		t.Errorf("webhook with a missing cache CA file: exit %d, %q", code, errOut)
	}
}

func TestConvertESO(t *testing.T) {
	dir := "../../internal/esoconvert/testdata/"
	ref := []string{"-f", dir + "clustersecretstore.yaml", "-f", dir + "serviceaccount.yaml", "-f", dir + "externalsecret-pgsql.yaml", "-f", dir + "externalsecret-registry.yaml"}
	code, out, errOut := runCommand(t, "", append(append([]string{"convert-eso"}, ref...), "-f", dir+"deployment-dbreaderapp.yaml")...)
	if code != 0 || errOut != "" || !strings.Contains(out, "kvinject.io/env-USERNAME: app-pgsql#username") {
		t.Errorf("reference setup: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	code, out, _ = runCommand(t, "", append(append([]string{"convert-eso"}, ref...), "-f", dir+"deployment-dbreaderapp-typo.yaml")...)
	if code != 1 || !strings.Contains(out, "reads Secret pqsql-creds, which no ExternalSecret in the input creates (did you mean pgsql-creds?)") {
		t.Errorf("typo: exit %d, stdout:\n%s", code, out)
	}
	if code, _, errOut := runCommand(t, "", "convert-eso"); code != 2 || !strings.Contains(errOut, "Usage: kvinject convert-eso") {
		t.Errorf("no -f: exit %d, %q", code, errOut)
	}
}
