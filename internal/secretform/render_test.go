package secretform

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

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
			got, err := Render(context.Background(), templateFile(t, "f", tt.text), fakeValues(values))
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
			RenderError{Line: 2, Col: 5, Problem: `property "pass" is missing: no key "pass" at the top level`, Detail: `it has keys "password", "username"`,
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
			got, err := Render(context.Background(), templateFile(t, "f", tt.text), fakeValues(values))
			var re *RenderError
			if !errors.As(err, &re) {
				t.Fatalf("Render = %q, %v; want a *RenderError", got, err)
			}
			if diff := cmp.Diff(tt.want, *re, cmpopts.IgnoreUnexported(RenderError{})); diff != "" {
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
	_, err := Render(context.Background(), f, fakeValues(nil))
	if err == nil || !strings.Contains(err.Error(), "not in the spec's refs") {
		t.Errorf("Render error = %v, want the reference reported as missing from the refs", err)
	}
}

// TestRenderBounded: templates the webhook admits, because no static check
// can see their cost, still end quickly and small in the agent. Each case
// also passes spec.ParseTemplate, so only the runtime budget stops it.
func TestRenderBounded(t *testing.T) {
	values := map[string]string{"plain": "louiselane-plain"}
	doubling := `{{ $x := secret "plain" }}` + strings.Repeat(`{{ $x = printf "%s%s" $x $x }}`, 30) + `{{ len $x }}`
	tests := []struct {
		name, text string
		want       RenderError
	}{
		{"a value doubled 30 times", doubling,
			RenderError{Line: 1, Col: 574, Problem: "the template's functions produce more than 16777216 bytes in all", Fix: "make the template build smaller values"}},
		{"a huge printf width", `{{ printf "%999999999s" (secret "plain") }}`,
			RenderError{Line: 1, Col: 3, Problem: "the template's functions produce more than 16777216 bytes in all", Fix: "make the template build smaller values"}},
		{"a width from an argument", `{{ printf "%*s" 999999999 (secret "plain") }}`,
			RenderError{Line: 1, Col: 3, Problem: "printf takes no width or precision from an argument (*)", Fix: "write the width as a number in the format"}},
		{"escapers of escapers", `{{ $x := secret "plain" }}` + strings.Repeat(`{{ $x = js $x $x $x }}`, 12),
			RenderError{Line: 1, Col: 254, Problem: "the template's functions produce more than 16777216 bytes in all", Fix: "make the template build smaller values"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := templateFile(t, "f", tt.text)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := Render(context.Background(), f, fakeValues(values))
			runtime.ReadMemStats(&after)
			var re *RenderError
			if !errors.As(err, &re) {
				t.Fatalf("Render = %d bytes, %v; want a *RenderError", len(got), err)
			}
			if diff := cmp.Diff(tt.want, *re, cmpopts.IgnoreUnexported(RenderError{})); diff != "" {
				t.Errorf("RenderError (-want +got):\n%s", diff)
			}
			// The budget is 16 MiB of function results; allow for copies.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("rendering allocated %d MiB, want at most 64", alloc>>20)
			}
		})
	}
}

// TestRenderDeadline: a deadline that passes while the template runs stops
// it at the next point that checks: here the secret call itself.
func TestRenderDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lookup := func(r spec.Ref) ([]byte, error) {
		cancel() // the deadline passes during the first read
		return []byte("v"), nil
	}
	f := templateFile(t, "f", `{{ secret "a" }}{{ "more" | upper }}`)
	_, err := Render(ctx, f, lookup)
	want := RenderError{Line: 1, Col: 3, Problem: "the template did not finish before the agent's deadline", Fix: "make the template do less"}
	var re *RenderError
	if !errors.As(err, &re) {
		t.Fatalf("Render error = %v, want a *RenderError", err)
	}
	if diff := cmp.Diff(want, *re, cmpopts.IgnoreUnexported(RenderError{})); diff != "" {
		t.Errorf("RenderError (-want +got):\n%s", diff)
	}
}

// TestRenderRefusesUnbounded: a spec not made by the webhook cannot bring
// the agent a template the webhook refuses.
func TestRenderRefusesUnbounded(t *testing.T) {
	for _, tt := range []struct{ name, text, problem string }{
		{"range over a number", `{{ range 2000000000 }}{{ end }}{{ secret "a" }}`,
			"range is not allowed: a template has no list to iterate (its data is empty); write the lines out"},
		{"recursion", `{{ define "r" }}{{ template "r" }}{{ end }}{{ template "r" }}{{ secret "a" }}`,
			`template "r" is called again while it runs: recursion is not allowed`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := spec.File{Name: "f", Mode: "0400", Template: tt.text, Refs: map[string]spec.Ref{"a": {Vault: testVault, Name: "a"}}}
			_, err := Render(context.Background(), f, fakeValues(map[string]string{"a": "v"}))
			var re *RenderError
			if !errors.As(err, &re) || re.Problem != tt.problem {
				t.Fatalf("Render error = %v, want the problem %q", err, tt.problem)
			}
		})
	}
}
