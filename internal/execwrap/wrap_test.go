package execwrap

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeEnvFile writes values in the agent's format (NAME='value').
func writeEnvFile(t testing.TB, values map[string]string) string {
	t.Helper()
	var b strings.Builder
	for _, k := range sortedNames(values) {
		b.WriteString(k + "='" + values[k] + "'\n")
	}
	p := filepath.Join(t.TempDir(), ".kvinject-env")
	if err := os.WriteFile(p, []byte(b.String()), 0o400); err != nil {
		t.Fatal(err)
	}
	return p
}

func sortedNames(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// sameAsKubelet checks that the wrapper, given what the kubelet makes of a
// container whose delivered variables hold placeholders, execs what the
// kubelet would have run had the variables been in the env (fileKeyRef).
func sameAsKubelet(t testing.TB, argv []string, env []envEntry, values map[string]string, probe bool) {
	t.Helper()
	// fileKeyRef: the kubelet resolves the variables itself.
	var direct, wrapped []envEntry
	var names []string
	for _, e := range env {
		if v, ok := values[e.name]; ok && e.resolved {
			direct = append(direct, envEntry{name: e.name, value: v, resolved: true})
			wrapped = append(wrapped, envEntry{name: e.name, value: Placeholder(e.name)})
			names = append(names, e.name)
			continue
		}
		direct, wrapped = append(direct, e), append(wrapped, e)
	}
	wantArgv, wantEnv := kubeletRun(argv, direct)
	gotArgvIn, gotEnvIn := kubeletRun(argv, wrapped)
	if probe {
		wantArgv, gotArgvIn = kubeletProbe(argv, direct), kubeletProbe(argv, wrapped)
	}
	var environ []string
	for _, k := range sortedNames(gotEnvIn) {
		environ = append(environ, k+"="+gotEnvIn[k])
	}
	c := Config{EnvFile: writeEnvFile(t, values), Names: names, Probe: probe, Args: gotArgvIn}
	plan, p := Prepare(c, environ)
	if p != nil {
		t.Fatalf("Prepare: %s", p.Line)
	}
	if diff := cmp.Diff(wantArgv, plan.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	gotEnv := map[string]string{}
	for _, kv := range plan.Env {
		k, v, _ := strings.Cut(kv, "=")
		gotEnv[k] = v
	}
	if diff := cmp.Diff(wantEnv, gotEnv); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestSameAsKubelet(t *testing.T) {
	t.Parallel()
	const pw = "p a$s\"w#o=r\nd ü $(USER) <kvinject-exec:USER>"
	values := map[string]string{"PASSWORD": pw, "USER": "superman"}
	declared := []envEntry{
		{name: "EARLY", value: "x$(PASSWORD)"}, // before PASSWORD: stays $(PASSWORD)
		{name: "USER", resolved: true},
		{name: "PASSWORD", resolved: true},
		{name: "DSN", value: "postgres://$(USER):$(PASSWORD)@db/$(UNKNOWN)$$(PASSWORD)"},
		{name: "PATH", value: "/usr/bin:/bin"},
	}
	for _, tc := range []struct {
		name string
		argv []string
	}{
		{"plain", []string{"/bin/true", "--flag"}},
		{"variable", []string{"/bin/true", "$(PASSWORD)"}},
		{"escaped", []string{"/bin/true", "$$(PASSWORD)"}},
		{"unknown", []string{"/bin/true", "$(UNKNOWN)"}},
		{"escape then variable", []string{"/bin/true", "$$$(PASSWORD)"}},
		{"double escape", []string{"/bin/true", "$$$$(PASSWORD)"}},
		{"two in one", []string{"/bin/true", "-u=$(USER) -p=$(PASSWORD)!"}},
		{"unclosed", []string{"/bin/true", "$(PASSWORD", "$", "a$"}},
		{"other variable", []string{"/bin/true", "$(DSN)", "$(EARLY)"}},
		{"placeholder of another", []string{"/bin/true", "<kvinject-exec:OTHER>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sameAsKubelet(t, tc.argv, declared, values, false)
		})
		t.Run(tc.name+" probe", func(t *testing.T) {
			t.Parallel()
			sameAsKubelet(t, tc.argv, declared, values, true)
		})
	}
}

func FuzzSameAsKubelet(f *testing.F) {
	f.Add("$(PASSWORD)", "$$(PASSWORD)", "x$(PASSWORD)", "v$al ue", false)
	f.Add("$(UNKNOWN)", "$$$(PASSWORD)", "$(PASSWORD", "<kvinject-exec:PASSWORD>", true)
	f.Fuzz(func(t *testing.T, arg1, arg2, dsn, value string, probe bool) {
		if strings.ContainsAny(value, "'\x00\r") || value == "" || !utfOK(arg1+arg2+dsn+value) ||
			HasPlaceholder(arg1) || HasPlaceholder(arg2) || HasPlaceholder(dsn) || strings.Contains(arg1+arg2+dsn, "\x00") {
			t.Skip() // what the agent refuses to write, or what the webhook denies
		}
		env := []envEntry{{name: "PASSWORD", resolved: true}, {name: "DSN", value: dsn}, {name: "PATH", value: "/bin"}}
		sameAsKubelet(t, []string{"/bin/true", arg1, arg2}, env, map[string]string{"PASSWORD": value}, probe)
	})
}

func utfOK(s string) bool { return strings.ToValidUTF8(s, "\ufffd") == s }

func TestPrepareProblems(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value"
	dir := t.TempDir()
	file := writeEnvFile(t, map[string]string{"PASSWORD": secret})
	for _, tc := range []struct {
		name     string
		c        Config
		path     string
		want     string // in the line
		wantCode int
	}{
		{"no env file", Config{EnvFile: filepath.Join(dir, "missing"), Names: []string{"PASSWORD"}, Args: []string{"/bin/true"}}, "/bin", "cannot read the env file", 1},
		{"variable missing", Config{EnvFile: file, Names: []string{"PASSWORD", "USER"}, Args: []string{"/bin/true"}}, "/bin", "has no variable USER", 1},
		{"not in PATH", Config{EnvFile: file, Names: []string{"PASSWORD"}, Args: []string{"no-such-program"}}, "/bin:/usr/bin", `"no-such-program" is not in PATH`, 127},
		{"no such path", Config{EnvFile: file, Names: []string{"PASSWORD"}, Args: []string{"/no/such"}}, "/bin", `cannot execute the program "/no/such"`, 127},
		{"not executable", Config{EnvFile: file, Names: []string{"PASSWORD"}, Args: []string{file}}, "/bin", "cannot execute the program", 126},
		{"program from the value", Config{EnvFile: file, Names: []string{"PASSWORD"}, Args: []string{Placeholder("PASSWORD")}}, "/bin", `"<kvinject-exec:PASSWORD>" is not in PATH`, 127},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, p := Prepare(tc.c, []string{"PATH=" + tc.path, "PASSWORD=" + Placeholder("PASSWORD")})
			if p == nil {
				t.Fatal("no problem")
			}
			if !strings.Contains(p.Line, tc.want) || p.Code != tc.wantCode {
				t.Errorf("got %d %q, want %d and %q in it", p.Code, p.Line, tc.wantCode, tc.want)
			}
			if strings.Contains(p.Line, secret) || strings.Contains(p.Line, "\n") {
				t.Errorf("the line quotes the value or has a line break: %q", p.Line)
			}
		})
	}
}

func TestPreparePath(t *testing.T) {
	t.Parallel()
	file := writeEnvFile(t, map[string]string{"A": "1"})
	plan, p := Prepare(Config{EnvFile: file, Names: []string{"A"}, Args: []string{"sh", "-c", "true"}}, []string{"PATH=/nonexistent::/bin:/usr/bin", "HOME=/"})
	if p != nil {
		t.Fatal(p.Line)
	}
	if plan.Path != "/bin/sh" {
		t.Errorf("path %q, want /bin/sh (the first in PATH)", plan.Path)
	}
	// A variable the container did not declare is set at the end; the rest stays.
	want := []string{"PATH=/nonexistent::/bin:/usr/bin", "HOME=/", "A=1"}
	if diff := cmp.Diff(want, plan.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	c := Config{EnvFile: "/var/run/secrets/$x/.kvinject-env", TerminationLog: "/dev/termination-log", Names: []string{"A", "B"}, Probe: true}
	argv := append(c.Flags(true), "/app", "--", "x")
	// The kubelet expands the flags like any argument.
	for i, a := range argv {
		argv[i] = kubeletExpand(a, nil)
	}
	got, err := ParseArgs(argv)
	if err != nil {
		t.Fatal(err)
	}
	c.Args = []string{"/app", "--", "x"}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	checks := []struct {
		argv []string
		want Config
	}{
		{[]string{"--check-changed=/c"}, Config{CheckChanged: "/c"}},
		{[]string{"--check-changed=/c", "--", "/probe", "x"}, Config{CheckChanged: "/c", Args: []string{"/probe", "x"}}},
		{[]string{"--check-changed=/c", "--env-file=/f", "--env=A", "--probe", "--", "/probe"},
			Config{CheckChanged: "/c", EnvFile: "/f", Names: []string{"A"}, Probe: true, Args: []string{"/probe"}}},
	}
	for _, tc := range checks {
		got, err := ParseArgs(tc.argv)
		if err != nil {
			t.Errorf("ParseArgs(%q): %v", tc.argv, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseArgs(%q) (-want +got):\n%s", tc.argv, diff)
		}
	}
	for _, bad := range [][]string{{"/app"}, {"--env-file=/f", "--"}, {"--bogus", "--env-file=/f", "--", "/app"}, {"--", "/app"},
		{"--check-changed="}, {"--check-changed=/c", "--env-file=/f"}, {"--check-changed=/c", "--env=A", "--", "/app"}, {"--check-changed=/c", "--"}} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q): no error", bad)
		}
	}
	if !slices.Contains(c.Flags(true), "--") {
		t.Error("Flags end without --")
	}
}
