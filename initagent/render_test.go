package initagent

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/spec"
)

const testVault = "https://homelab-kv.vault.azure.net"

// templateFile builds a template file the way the webhook does.
func templateFile(t *testing.T, name, text string) spec.File {
	t.Helper()
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	refs, err := spec.ParseTemplate(text, testVault, cloud)
	if err != nil {
		t.Fatalf("ParseTemplate(%q): %v", text, err)
	}
	return spec.File{Name: name, Mode: "0444", Template: text, Refs: refs}
}

// fakeValues resolves refs from a map of secret name -> value.
func fakeValues(values map[string]string) func(spec.Ref) ([]byte, error) {
	return func(r spec.Ref) ([]byte, error) {
		v, ok := values[r.Name]
		if !ok {
			return nil, errors.New("no such secret")
		}
		return Extract(v, r.Path)
	}
}

func TestRender(t *testing.T) {
	values := map[string]string{
		"app-pgsql": `{"username":"superman","password":"louiselane","hosts":["db1","db2"]}`,
		"api-key":   "s3cr3t",
		"b64":       "aGVsbG8=",
	}
	tests := []struct {
		name, text, want string
	}{
		{"dsn", `postgres://{{ secret "app-pgsql#username" }}:{{ secret "app-pgsql#password" }}@{{ secret "app-pgsql#hosts.0" }}/app`,
			"postgres://superman:louiselane@db1/app"},
		{"whole value and funcs", `KEY={{ secret "api-key" | upper | quote }}
B={{ secret "b64" | b64dec }} E={{ secret "api-key" | b64enc }}`, "KEY=\"S3CR3T\"\nB=hello E=czNjcjN0"},
		{"compact JSON leaf", `{{ secret "app-pgsql#hosts" }}`, `["db1","db2"]`},
		{"secret URL", `{{ secret "https://other-kv.vault.azure.net/secrets/api-key" }}`, "s3cr3t"},
		{"builtins", `{{ if eq (secret "api-key") "s3cr3t" }}yes{{ end }} {{ len (secret "api-key") }}`, "yes 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(templateFile(t, "f", tt.text), fakeValues(values))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("Render (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	values := map[string]string{
		"app-pgsql": `{"username":"superman","password":"louiselane"}`,
		"plain":     "louiselane-plain",
		"big":       strings.Repeat("x", 600<<10),
	}
	tests := []struct {
		name, text string
		want       RenderError
	}{
		{"missing property", "a\nb {{ secret \"app-pgsql#pass\" }}",
			RenderError{Line: 2, Col: 5, Problem: `property "pass" is missing: no key "pass" at the top level, which has keys "password", "username"`,
				Fix: "fix the path in the reference, or add the key to the secret", Ref: &spec.Ref{Vault: testVault, Name: "app-pgsql", Path: "pass"}}},
		{"not JSON", `{{ secret "plain#password" }}`,
			RenderError{Line: 1, Col: 3, Problem: `the value is not JSON (16 bytes), but property "password" was asked for`,
				Fix: "store the secret as a JSON object, or drop #password from the reference to get the whole value", Ref: &spec.Ref{Vault: testVault, Name: "plain", Path: "password"}}},
		{"b64dec of a value that is not base64", `{{ secret "plain" | b64dec }}`,
			RenderError{Line: 1, Col: 20, Problem: "the template fails to execute",
				Fix: "check the function and its arguments at that position (a missing key, a wrong argument type, or b64dec of a value that is not base64)"}},
		{"index out of range of a value", `{{ index (secret "plain") 99 }}`,
			RenderError{Line: 1, Col: 3, Problem: "the template fails to execute",
				Fix: "check the function and its arguments at that position (a missing key, a wrong argument type, or b64dec of a value that is not base64)"}},
		{"runaway output", `{{ secret "big" }}{{ secret "big" }}`,
			RenderError{Problem: "the rendered file exceeds 1048576 bytes", Fix: "make the template produce less output"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(templateFile(t, "f", tt.text), fakeValues(values))
			var re *RenderError
			if !errors.As(err, &re) {
				t.Fatalf("Render = %q, %v; want a *RenderError", got, err)
			}
			if diff := cmp.Diff(tt.want, *re); diff != "" {
				t.Errorf("RenderError (-want +got):\n%s", diff)
			}
			for _, v := range []string{"superman", "louiselane"} {
				if strings.Contains(re.Error()+re.Fix, v) {
					t.Errorf("error %q quotes a value", re.Error())
				}
			}
		})
	}
}

func TestRenderUnknownRef(t *testing.T) {
	f := templateFile(t, "f", `{{ secret "a" }}`)
	f.Refs = map[string]spec.Ref{} // a spec not built by the webhook
	_, err := Render(f, fakeValues(nil))
	if err == nil || !strings.Contains(err.Error(), "not in the spec's refs") {
		t.Errorf("Render error = %v, want the reference reported as missing from the refs", err)
	}
}
