package initagent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/onchange"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
)

// TestAffected: what counts as a change for a container, and one entry per
// container however many files, variables and secrets changed.
func TestAffected(t *testing.T) {
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	ref := func(s string) spec.Ref {
		r, err := spec.ParseRef(s, testVault, cloud)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tmpl := spec.File{Name: "conf", Mode: "0400", Template: `{{ secret "db#user" }}{{ secret "api" }}`,
		Refs: map[string]spec.Ref{"db#user": ref("db#user"), "api": ref("api")}}
	s := &spec.Spec{
		Files: []spec.File{secretFile("password", "0400", "db#password"), secretFile("key", "0400", "api"), tmpl},
		Env:   []spec.EnvVar{{Name: "PASSWORD", Secret: ref("db#password")}, {Name: "TOKEN", Secret: ref("token")}},
		OnChange: &spec.OnChange{Action: spec.OnChangeRestart, Containers: []spec.Consumer{
			{Name: "app", Files: true},
			{Name: "batch", Env: []string{"PASSWORD"}},
			{Name: "both", Files: true, Env: []string{"TOKEN"}},
		}},
	}
	tests := []struct {
		name string
		ch   setChange
		want []containerChange
	}{
		{"nothing", setChange{}, nil},
		{"a file: every container that mounts the files", setChange{files: []string{"password"}}, []containerChange{
			{Name: "app", Files: []string{"password"}, Secrets: []string{"db"}},
			{Name: "both", Files: []string{"password"}, Secrets: []string{"db"}},
		}},
		{"several files from several secrets: once each", setChange{files: []string{"key", "conf"}}, []containerChange{
			{Name: "app", Files: []string{"key", "conf"}, Secrets: []string{"api", "db"}},
			{Name: "both", Files: []string{"key", "conf"}, Secrets: []string{"api", "db"}},
		}},
		{"a variable: only the containers that get it", setChange{env: []string{"TOKEN"}}, []containerChange{
			{Name: "both", Env: []string{"TOKEN"}, Secrets: []string{"token"}},
		}},
		{"files and variables", setChange{files: []string{"password"}, env: []string{"PASSWORD", "TOKEN"}}, []containerChange{
			{Name: "app", Files: []string{"password"}, Secrets: []string{"db"}},
			{Name: "batch", Env: []string{"PASSWORD"}, Secrets: []string{"db"}},
			{Name: "both", Files: []string{"password"}, Env: []string{"TOKEN"}, Secrets: []string{"db", "token"}},
		}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, affected(s, tc.ch)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestDiffSet: a file counts as changed by its content, a variable by its
// value in the env file.
func TestDiffSet(t *testing.T) {
	dir := t.TempDir()
	old := []FileData{{Name: "a", Mode: 0o400, Data: []byte("1")}, {Name: "b", Mode: 0o400, Data: []byte("2")},
		{Name: spec.EnvFileName, Mode: 0o400, Data: []byte("X='1'\nY='2'\n")}}
	if _, err := WriteFiles(dir, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		new  []FileData
		want setChange
	}{
		{"the same", old, setChange{}},
		{"a mode alone", []FileData{{Name: "a", Mode: 0o444, Data: []byte("1")}}, setChange{}},
		{"a file and a variable", []FileData{{Name: "a", Data: []byte("1")}, {Name: "b", Data: []byte("3")},
			{Name: spec.EnvFileName, Data: []byte("X='1'\nY='3'\n")}}, setChange{files: []string{"b"}, env: []string{"Y"}}},
		{"a new file", []FileData{{Name: "c", Data: []byte("1")}}, setChange{files: []string{"c"}}},
	}
	for _, tc := range tests {
		got := diffSet(dir, tc.new, []string{"X", "Y"})
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(setChange{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// onChangeAgent is an agent and refresh loop for kvinject.io/on-change,
// reading from a rotating vault.
type onChangeAgent struct {
	t                *testing.T
	dir, state, proc string
	vault            *rotatingVault
	logs, errs       syncbuf.Buffer
	a                *Agent
}

func newOnChangeAgent(t *testing.T, oc *spec.OnChange, env []spec.EnvVar, files ...spec.File) *onChangeAgent {
	t.Helper()
	h := &onChangeAgent{t: t, dir: t.TempDir(), state: t.TempDir(), proc: filepath.Join(t.TempDir(), "proc"),
		vault: &rotatingVault{values: map[string]string{}, versions: map[string]int{}, calls: map[string]int{}}}
	s := &spec.Spec{Version: spec.Version, Vault: testVault, MountPath: h.dir, Files: files, Env: env, OnChange: oc,
		Identity: spec.Identity{ClientID: testClient, TenantID: testTenant, TokenExpirationSeconds: 3600}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "kvinject-exec")
	if err := os.WriteFile(wrapper, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var ticks atomic.Int64
	ticks.Store(int64(100 * time.Second))
	a, err := New(Options{Spec: s, Err: &h.errs, Logger: testLogger(&h.logs), StateDir: h.state, ProcRoot: h.proc,
		ExecWrapper: wrapper, BinDir: t.TempDir(),
		Boottime:  func() (time.Duration, error) { return time.Duration(ticks.Add(int64(time.Second))), nil },
		NewGetter: func(string) (keyvault.Getter, error) { return h.vault, nil }})
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	return h
}

func (h *onChangeAgent) start() {
	h.t.Helper()
	if err := h.a.Run(context.Background()); err != nil {
		h.t.Fatalf("Run: %v\n%s", err, h.errs.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.a.Refresh(ctx, time.Second); close(done) }()
	h.t.Cleanup(func() { cancel(); <-done })
}

func (h *onChangeAgent) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within 10s\nlog:\n%s\nstderr:\n%s", what, h.logs.String(), h.errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *onChangeAgent) refreshes() int { return h.vault.callsOf("app-pgsql") }

// TestRefreshRestart: a change writes the marker of each container that
// reads it, once, after the new set is in place; a new version with the
// same value, or a change a container does not read, marks nothing.
func TestRefreshRestart(t *testing.T) {
	oc := &spec.OnChange{Action: spec.OnChangeRestart, Containers: []spec.Consumer{
		{Name: "app", Files: true}, {Name: "batch", Env: []string{"TOKEN"}},
	}}
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	tokenRef, _ := spec.ParseRef("api-token", testVault, cloud)
	h := newOnChangeAgent(t, oc, []spec.EnvVar{{Name: "TOKEN", Secret: tokenRef}},
		secretFile("username", "0400", "app-pgsql#username"), secretFile("password", "0400", "app-pgsql#password"))
	h.vault.set("app-pgsql", `{"username":"superman","password":"louiselane"}`)
	h.vault.set("api-token", "token-value-one")
	h.start()
	marker := func(c string) (onchange.Marker, bool) {
		b, err := os.ReadFile(filepath.Join(h.state, c, spec.OnChangeChangedFile))
		if err != nil {
			return onchange.Marker{}, false
		}
		m, err := onchange.DecodeMarker(b)
		if err != nil {
			t.Fatal(err)
		}
		return m, true
	}
	for _, c := range []string{"app", "batch"} {
		if fi, err := os.Stat(filepath.Join(h.state, c)); err != nil || !fi.IsDir() {
			t.Fatalf("the agent made no directory for %s: %v", c, err)
		}
		if _, ok := marker(c); ok {
			t.Fatalf("%s has a marker before any change", c)
		}
	}

	// Both files change, from one secret: one marker for the app, none for batch.
	h.vault.set("app-pgsql", `{"username":"lex","password":"luthor"}`)
	h.waitFor("the app's marker", func() bool { _, ok := marker("app"); return ok })
	first, _ := marker("app")
	if diff := cmp.Diff([]string{"app-pgsql"}, first.Secrets); diff != "" {
		t.Errorf("marker secrets (-want +got):\n%s", diff)
	}
	if got, _ := os.ReadFile(filepath.Join(h.dir, "password")); string(got) != "luthor" {
		t.Errorf("the marker is there and the file holds %q", got)
	}

	// A new version with the same value: nothing.
	h.vault.set("app-pgsql", `{"username":"lex","password":"luthor"}`)
	n := h.refreshes()
	h.waitFor("two more refreshes", func() bool { return h.refreshes() >= n+2 })
	if m, _ := marker("app"); m.Ticks != first.Ticks {
		t.Errorf("the app was marked again for a version with the same value")
	}
	if _, ok := marker("batch"); ok {
		t.Errorf("batch was marked, and its variable did not change")
	}

	// The variable changes: batch is marked, the app is not.
	h.vault.set("api-token", "token-value-two")
	h.waitFor("batch's marker", func() bool { _, ok := marker("batch"); return ok })
	if m, _ := marker("app"); m.Ticks != first.Ticks {
		t.Errorf("the app was marked for a variable it does not get")
	}
	logs := h.logs.String()
	if n := strings.Count(logs, `"msg":"restarting container: its liveness check fails until the kubelet restarts it"`); n != 2 {
		t.Errorf("%d restart lines, want 2:\n%s", n, logs)
	}
	for _, want := range []string{`"container":"app","files":["username","password"],"secrets":["app-pgsql"]`, `"container":"batch","env":["TOKEN"],"secrets":["api-token"]`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log of %s:\n%s", want, logs)
		}
	}
	assertNoValues(t, logs+h.errs.String(), "superman", "louiselane", "luthor", "token-value-one", "token-value-two")
}

// TestRefreshSignal: each change sends the signal once to the main process
// of each target container, found by the rule of onchange.FindMains over a
// /proc tree whose processes are real ones started here: never to the
// container's other processes, never to a container that is not a target.
func TestRefreshSignal(t *testing.T) {
	oc := &spec.OnChange{Action: spec.OnChangeSignal, Signal: "SIGHUP", Containers: []spec.Consumer{{Name: "app", Files: true}}}
	h := newOnChangeAgent(t, oc, nil, secretFile("password", "0400", "app-pgsql#password"))
	h.vault.set("app-pgsql", `{"password":"louiselane"}`)
	h.start()
	nonce, err := os.ReadFile(filepath.Join(h.state, "app", spec.OnChangeIDFile))
	if err != nil || len(strings.TrimSpace(string(nonce))) != 32 {
		t.Fatalf("the agent wrote no nonce: %q %v", nonce, err)
	}

	// Processes that count the SIGHUPs they get.
	logDir := t.TempDir()
	spawn := func(name string, ppid int, nonce string) {
		t.Helper()
		count := filepath.Join(logDir, name)
		cmd := exec.Command("sh", "-c", `trap 'echo hup >> "$0"' HUP; while :; do sleep 0.05; done`, count)
		if err := cmd.Start(); err != nil {
			t.Skipf("no sh to run: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pid := cmd.Process.Pid
		pdir := filepath.Join(h.proc, strconv.Itoa(pid))
		root := filepath.Join(t.TempDir(), "root")
		if err := os.MkdirAll(filepath.Join(root, spec.OnChangeMountPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if nonce != "" {
			if err := os.WriteFile(filepath.Join(root, spec.OnChangeMountPath, spec.OnChangeIDFile), []byte(nonce), 0o444); err != nil {
				t.Fatal(err)
			}
		}
		stat := strconv.Itoa(pid) + " (sh) S " + strconv.Itoa(ppid) + " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + strconv.Itoa(1000+pid) + " 0 0\n"
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pdir, "stat"), []byte(stat), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(root, filepath.Join(pdir, "root")); err != nil {
			t.Fatal(err)
		}
	}
	hups := func(name string) int {
		b, _ := os.ReadFile(filepath.Join(logDir, name))
		return strings.Count(string(b), "hup")
	}
	if err := os.MkdirAll(h.proc, 0o755); err != nil {
		t.Fatal(err)
	}
	n := strings.TrimSpace(string(nonce))
	spawn("app", 0, n)
	spawn("other", 0, "another-containers-nonce")
	spawn("child", 4242, n) // a process the app started: its parent is in the namespace

	for i, v := range []string{"lex", "luthor"} {
		h.vault.set("app-pgsql", `{"password":"`+v+`"}`)
		h.waitFor("the app's SIGHUP", func() bool { return hups("app") == i+1 })
		if got, _ := os.ReadFile(filepath.Join(h.dir, "password")); string(got) != v {
			t.Errorf("the app got SIGHUP and the file holds %q", got)
		}
	}
	// A quiet refresh or two: no more signals.
	c := h.refreshes()
	h.waitFor("two more refreshes", func() bool { return h.refreshes() >= c+2 })
	time.Sleep(200 * time.Millisecond)
	if diff := cmp.Diff(map[string]int{"app": 2, "other": 0, "child": 0}, map[string]int{"app": hups("app"), "other": hups("other"), "child": hups("child")}); diff != "" {
		t.Errorf("SIGHUPs (-want +got):\n%s", diff)
	}
	if n := strings.Count(h.logs.String(), `"msg":"signalled container","container":"app","files":["password"],"secrets":["app-pgsql"],"signal":"SIGHUP"`); n != 2 {
		t.Errorf("%d signal lines, want 2:\n%s", n, h.logs.String())
	}
}
