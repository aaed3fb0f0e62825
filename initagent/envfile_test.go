package initagent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

func TestEnvValueProblem(t *testing.T) {
	for _, tc := range []struct {
		name, value, cause string
	}{
		{"spaces, quotes, #, =, $, non-ASCII", `a "b" #c =d $e ${f} Grüße 世界`, ""},
		{"a trailing newline", "line one\nline two\n", ""},
		{"a lone CR", "a\rb", ""},
		{"empty", "", "the value is empty, which the kubelet takes for a missing variable"},
		{"a single quote", "it's", "the value holds a single quote ('), which the kubelet's env file format cannot carry"},
		{"NUL", "a\x00b", "the value holds a NUL byte, which no environment variable can carry"},
		{"not UTF-8", "a\xffb", "the value is not UTF-8 text, which the container runtime needs for environment variables"},
		{"CR LF", "a\r\nb", "the value holds a CR LF line break, which the kubelet's env file reader turns into LF"},
		{"a line too long", strings.Repeat("x", 70000), "a line of the variable in the env file would be 70011 bytes, more than the kubelet's env file reader takes (65535)"},
		{"long but in lines", strings.Repeat(strings.Repeat("x", 1000)+"\n", 70), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cause, _ := envValueProblem("PASSWORD", []byte(tc.value))
			if cause != tc.cause {
				t.Errorf("cause %q, want %q", cause, tc.cause)
			}
		})
	}
}

// TestRunWritesEnvFile: env variables go into one env file, part of the same
// all-or-nothing set; a value the format cannot carry is a problem naming
// the variable, and nothing is written.
func TestRunWritesEnvFile(t *testing.T) {
	run := func(t *testing.T, value string) (string, string, error) {
		dir := t.TempDir()
		vault := newFakeVault(map[string]string{"app-pgsql": `{"username":"superman","password":` + value + `}`})
		s := mustSpec(t, dir, secretFile("username", "0400", "app-pgsql#username"))
		cloud, _ := spec.LookupCloud(spec.DefaultCloud)
		for _, e := range []struct{ name, ref string }{{"USERNAME", "app-pgsql#username"}, {"PASSWORD", "app-pgsql#password"}} {
			r, err := spec.ParseRef(e.ref, testVault, cloud)
			if err != nil {
				t.Fatal(err)
			}
			s.Env = append(s.Env, spec.EnvVar{Name: e.name, Secret: r})
		}
		var logs, errs strings.Builder
		defer func() {
			// The log counts the user's files and the variables, not the env file.
			if errs.Len() == 0 && !strings.Contains(logs.String(), `"msg":"wrote files","dir":"`+dir+`","files":1,`) {
				t.Errorf("wrote files line does not count 1 file and the env:\n%s", logs.String())
			}
			if errs.Len() == 0 && !strings.Contains(logs.String(), `"env":2`) {
				t.Errorf("wrote files line does not count 2 env variables:\n%s", logs.String())
			}
		}()
		a, err := New(Options{Spec: s, Err: &errs, Logger: testLogger(&logs),
			NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
		if err != nil {
			t.Fatal(err)
		}
		err = a.Run(context.Background())
		b, _ := os.ReadFile(filepath.Join(dir, spec.EnvFileName))
		return string(b), errs.String(), err
	}
	got, _, err := run(t, `"louise lane's \"#=$\" 🌍\n"`)
	if err == nil {
		t.Fatalf("a single quote was written: %q", got)
	}
	got, stderr, err := run(t, `"louise \"#=$\" 🌍\n"`)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, stderr)
	}
	want := "USERNAME='superman'\nPASSWORD='louise \"#=$\" 🌍\n'\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("env file (-want +got):\n%s", diff)
	}
	_, stderr, _ = run(t, `"it's"`)
	wantLine := "error: vault homelab-kv.vault.azure.net, secret app-pgsql#password, env PASSWORD: the value holds a single quote ('), which the kubelet's env file format cannot carry. Fix: deliver it as a file instead (a kvinject.io/secret-<file> annotation)\n"
	if stderr != wantLine {
		t.Errorf("stderr %q, want %q", stderr, wantLine)
	}
}

// TestRunExecDelivery: for the exec wrapper the agent copies the wrapper
// into the bin volume, executable, and writes the env file with the spec's
// mode, readable by the app; the wrapper reads the same format back.
func TestRunExecDelivery(t *testing.T) {
	dir, bin := t.TempDir(), t.TempDir()
	src := filepath.Join(t.TempDir(), "kvinject-exec")
	if err := os.WriteFile(src, []byte("#!wrapper"), 0o600); err != nil {
		t.Fatal(err)
	}
	vault := newFakeVault(map[string]string{"app-pgsql": `{"password":"louise \"#=$\" 🌍\n"}`})
	s := mustSpec(t, dir, secretFile("f", "0400", "app-pgsql#password"))
	s.Files = nil
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	r, err := spec.ParseRef("app-pgsql#password", testVault, cloud)
	if err != nil {
		t.Fatal(err)
	}
	s.Env = []spec.EnvVar{{Name: "PASSWORD", Secret: r}}
	s.EnvDelivery, s.EnvFileMode = spec.DeliveryExec, "0444"
	var errs strings.Builder
	run := func(src string) error {
		a, err := New(Options{Spec: s, Err: &errs, ExecWrapper: src, BinDir: bin,
			NewGetter: func(string) (keyvault.Getter, error) { return vault, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return a.Run(context.Background())
	}
	if err := run(src); err != nil {
		t.Fatalf("Run: %v\n%s", err, errs.String())
	}
	fi, err := os.Stat(filepath.Join(bin, "kvinject-exec"))
	if err != nil || fi.Mode().Perm() != 0o555 {
		t.Fatalf("wrapper: %v %v, want mode 0555", fi, err)
	}
	fi, err = os.Stat(filepath.Join(dir, spec.EnvFileName))
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("env file: %v %v, want mode 0444", fi, err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, spec.EnvFileName))
	if v, ok, err := execwrap.LookupEnv(data, "PASSWORD"); err != nil || !ok || v != "louise \"#=$\" 🌍\n" {
		t.Errorf("the wrapper reads %q %v %v", v, ok, err)
	}
	// No wrapper to copy: a problem line, and nothing written.
	dir2 := t.TempDir()
	s.MountPath = dir2
	errs.Reset()
	if err := run(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Run without a wrapper succeeded")
	}
	if !strings.Contains(errs.String(), "cannot copy the exec wrapper") {
		t.Errorf("stderr %q", errs.String())
	}
	if _, err := os.Stat(filepath.Join(dir2, spec.EnvFileName)); err == nil {
		t.Error("the env file was written without the wrapper")
	}
}
