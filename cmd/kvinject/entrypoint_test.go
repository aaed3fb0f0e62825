package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kvinject/kvinject/internal/testkit/golden"
	"github.com/kvinject/kvinject/internal/testkit/registrytest"
)

// awkwardArgs break naive quoting in YAML, JSON or a shell.
var awkwardArgs = []string{"--msg=it's \"quoted\"", "a b\tc\nd", "$(HOME) ${X} `id`", "#not-a-comment", "key: value", "ünïcødé ✓", "back\\slash", "", "null"}

// TestEntrypoint runs kvinject entrypoint against registries on loopback
// with the user's credentials where users keep them: a docker config in
// DOCKER_CONFIG (read by go-containerregistry's default keychain).
func TestEntrypoint(t *testing.T) {
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	reg, other, untrusted := registrytest.New(t), registrytest.New(t), registrytest.New(t)
	img := func(p v1.Platform, ep, cmd []string) v1.Image {
		return registrytest.Image(t, p, v1.Config{Entrypoint: ep, Cmd: cmd})
	}
	single := reg.Push(t, "docker/dbreader:v1", img(amd64, []string{"/dbreader"}, []string{"--serve"}))
	odd := reg.Push(t, "odd/args:1", img(amd64, []string{"/odd"}, awkwardArgs))
	multi := reg.Push(t, "multi/app:2", registrytest.Index(
		registrytest.Entry{Platform: amd64, Image: img(amd64, []string{"/app-amd64"}, []string{"run"})},
		registrytest.Entry{Platform: arm64, Image: img(arm64, []string{"/app-arm64"}, []string{"run"})}))
	armOnly := reg.Push(t, "arm/only:1", registrytest.Index(registrytest.Entry{Platform: arm64, Image: img(arm64, []string{"/a"}, nil)}))
	nothing := reg.Push(t, "empty/img:1", img(amd64, nil, nil))
	refused := other.Push(t, "docker/dbreader:v1", img(amd64, []string{"/x"}, nil))
	unknownCA := untrusted.Push(t, "docker/dbreader:v1", img(amd64, []string{"/x"}, nil))
	second := reg.Push(t, "other/dbreader:v1", img(amd64, []string{"/y"}, nil))

	// The user's docker config: right credentials for reg and untrusted, a
	// wrong password for other.
	dir := t.TempDir()
	auth := func(user, pass string) map[string]string {
		return map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
	}
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{
		reg.Host: auth(reg.User, reg.Password), other.Host: auth(other.User, "wrong"), untrusted.Host: auth(untrusted.User, untrusted.Password)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "")

	ca := []string{"--ca-file", reg.CAFile, "--ca-file", other.CAFile}
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{name: "single", args: append([]string{"--container", "secret-reader"}, append(ca, single)...)},
		{name: "entrypoint-only", args: append([]string{"--entrypoint-only"}, append(ca, single)...)},
		{name: "awkward-args", args: append(ca, odd)},
		{name: "multi-arch", args: append([]string{"--platform", "linux/arm64"}, append(ca, multi)...)},
		{name: "every-problem-at-once", args: append(ca, single, armOnly, nothing, refused, unknownCA, reg.Host+"/docker/dbreader:v9", "Not/A:Ref:"), wantCode: 1},
		{name: "same-container-name", args: append(ca, single, second), wantCode: 1},
		{name: "container-with-several-images", args: []string{"--container", "x", single, multi}, wantCode: 2},
		{name: "bad-platform", args: []string{"--platform", "linux", single}, wantCode: 2},
		{name: "no-image", args: []string{"--platform", "linux/amd64"}, wantCode: 2},
	}
	hosts := strings.NewReplacer(reg.Host, "REGISTRY", other.Host, "OTHER", untrusted.Host, "UNTRUSTED", reg.CAFile, "REGISTRY_CA", other.CAFile, "OTHER_CA")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCommand(t, "", append([]string{"entrypoint"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, out, errOut)
			}
			for _, secret := range []string{reg.Password, other.Password, untrusted.Password} {
				if strings.Contains(out+errOut, secret) {
					t.Errorf("output holds a registry password:\n%s%s", out, errOut)
				}
			}
			if tt.wantCode == 2 && strings.HasPrefix(errOut, "Usage") {
				errOut = "(usage)\n"
			}
			got := fmt.Sprintf("$ kvinject entrypoint %s\n# exit %d\n# stdout:\n%s# stderr:\n%s", strings.Join(tt.args, " "), code, out, errOut)
			golden.Check(t, filepath.Join("testdata", "entrypoint", tt.name+".golden"), []byte(hosts.Replace(got)))
		})
	}
}
