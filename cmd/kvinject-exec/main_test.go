package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/onchange"
)

var build = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kvinject-exec")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kvinject-exec")
	// The Makefile's flags.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New(string(out))
	}
	return bin, nil
})

func wrapper(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the wrapper")
	}
	bin, err := build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// TestSize: at most 2 MB stripped, as built for the image.
func TestSize(t *testing.T) {
	fi, err := os.Stat(wrapper(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kvinject-exec: %d bytes", fi.Size())
	if fi.Size() > 2_000_000 {
		t.Errorf("kvinject-exec is %d bytes, more than 2 MB", fi.Size())
	}
}

func TestRun(t *testing.T) {
	bin := wrapper(t)
	dir := t.TempDir()
	const value = "a b \"c\" $d #e =f\ng ü"
	envFile := filepath.Join(dir, ".kvinject-env")
	if err := os.WriteFile(envFile, []byte("PASSWORD='"+value+"'\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	termLog := filepath.Join(dir, "termination-log")
	if err := os.WriteFile(termLog, nil, 0o644); err != nil { // the kubelet makes it
		t.Fatal(err)
	}
	c := execwrap.Config{EnvFile: envFile, Names: []string{"PASSWORD"}, TerminationLog: termLog}
	run := func(program ...string) (*exec.Cmd, string, error) {
		cmd := exec.Command(bin, append(c.Flags(true), program...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "PASSWORD=" + execwrap.Placeholder("PASSWORD"), "KEEP=1"}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return cmd, out.String(), err
	}

	t.Run("exec in place", func(t *testing.T) {
		cmd, out, err := run("sh", "-c", `printf '%s|%s|%s|%s' "$$" "$PASSWORD" "$KEEP" "$1"`, "sh", execwrap.Placeholder("PASSWORD"))
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		want := strconv.Itoa(cmd.Process.Pid) + "|" + value + "|1|" + value
		if out != want {
			t.Errorf("got %q, want %q (the program's PID, the value in env and argv, the rest kept)", out, want)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		_, _, err := run("sh", "-c", "exit 7")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("got %v, want exit status 7", err)
		}
	})
	for _, tc := range []struct {
		name     string
		envFile  string
		names    []string
		program  string
		wantCode int
		want     string
	}{
		{"missing env file", filepath.Join(dir, "none"), []string{"PASSWORD"}, "true", 1, "cannot read the env file"},
		{"missing variable", envFile, []string{"PASSWORD", "USER"}, "true", 1, "has no variable USER"},
		{"missing program", envFile, []string{"PASSWORD"}, "no-such-app", 127, `"no-such-app" is not in PATH`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.EnvFile, c.Names = tc.envFile, tc.names
			defer func() { c.EnvFile, c.Names = envFile, []string{"PASSWORD"} }()
			_, out, err := run(tc.program)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.wantCode {
				t.Errorf("got %v, want exit status %d", err, tc.wantCode)
			}
			logged, _ := os.ReadFile(termLog)
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.want) || string(logged) != out {
				t.Errorf("stderr %q, termination log %q: want one line with %q in both", out, logged, tc.want)
			}
			if strings.Contains(out, "ü") {
				t.Errorf("the line quotes the value: %q", out)
			}
		})
	}
}

// TestCheckChanged: the liveness check of kvinject.io/on-change: restart,
// against this machine's own /proc: it fails when the marker is not older
// than the main process of the caller's mount namespace, and otherwise
// passes, or runs the probe's own command and takes its status.
func TestCheckChanged(t *testing.T) {
	bin := wrapper(t)
	main, err := onchange.MainInMountNamespace("/proc")
	if err != nil {
		t.Skipf("no /proc to check against: %v", err)
	}
	marker := filepath.Join(t.TempDir(), "changed")
	for _, tc := range []struct {
		name     string
		ticks    int64 // relative to the main process's start; none: no marker
		program  []string
		wantCode int
		want     string
	}{
		{name: "no marker", ticks: -1 << 62, wantCode: 0},
		{name: "no marker, the probe's command runs", ticks: -1 << 62, program: []string{"sh", "-c", "exit 3"}, wantCode: 3},
		{name: "a change before the start", ticks: -int64(onchange.DurationTicks(onchange.StartMargin)) - 1, wantCode: 0},
		{name: "a change after the start", ticks: 1, wantCode: 1, want: "kvinject-exec: secret app-pgsql changed at "},
		{name: "a change before the start, the probe's command runs", ticks: -int64(onchange.DurationTicks(onchange.StartMargin)) - 1, program: []string{"sh", "-c", "exit 3"}, wantCode: 3},
		{name: "a change after the start, the probe's command does not run", ticks: 1, program: []string{"sh", "-c", "echo ran; exit 3"}, wantCode: 1, want: "restarting it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(marker)
			if tc.ticks < 0 && tc.ticks != -1<<62 && int64(main.Start)+tc.ticks < 0 {
				t.Skipf("the main process of this mount namespace started %d ticks after boot: no time before it", main.Start)
			}
			if tc.ticks != -1<<62 {
				m := onchange.Marker{Ticks: uint64(int64(main.Start) + tc.ticks), Secrets: []string{"app-pgsql"}}
				if err := os.WriteFile(marker, m.Encode(), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			argv := []string{execwrap.CheckChangedFlag(marker)}
			if tc.program != nil {
				argv = append(append(argv, "--"), tc.program...)
			}
			cmd := exec.Command(bin, argv...)
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "ran") {
				t.Errorf("exit %d, output %q: want exit %d and %q", code, out, tc.wantCode, tc.want)
			}
		})
	}
}

// BenchmarkExec: the wrapper's cost is the difference between starting a
// program through it (exec of the wrapper, one env file read, exec of the
// program) and starting the program directly.
func BenchmarkExec(b *testing.B) {
	bin, err := build()
	if err != nil {
		b.Skip(err)
	}
	prog, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true to exec")
	}
	dir := b.TempDir()
	envFile := filepath.Join(dir, ".kvinject-env")
	if err := os.WriteFile(envFile, []byte("PASSWORD='louise lane'\nUSERNAME='superman'\n"), 0o400); err != nil {
		b.Fatal(err)
	}
	c := execwrap.Config{EnvFile: envFile, Names: []string{"PASSWORD", "USERNAME"}}
	env := []string{"PATH=/usr/bin:/bin", "PASSWORD=" + execwrap.Placeholder("PASSWORD"), "USERNAME=" + execwrap.Placeholder("USERNAME")}
	for _, bc := range []struct {
		name string
		argv []string
	}{
		{"direct", []string{prog}},
		{"wrapped", append(append([]string{bin}, c.Flags(true)...), prog)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bc.argv[0], bc.argv[1:]...)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
			}
		})
	}
}
