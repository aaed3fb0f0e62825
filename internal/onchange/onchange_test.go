package onchange

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// proc is a fake /proc tree rooted in a temporary directory.
type proc struct {
	t    *testing.T
	root string
}

func newProc(t *testing.T) *proc {
	t.Helper()
	return &proc{t: t, root: filepath.Join(t.TempDir(), "proc")}
}

// fakeProcess is one process of the fake tree.
type fakeProcess struct {
	pid, ppid int
	start     uint64
	comm      string
	// mnt is its mount namespace; "" leaves ns/mnt out (not readable).
	mnt string
	// nonce, when set, is in its filesystem at idPath.
	nonce string
}

const idPath = "/var/run/kvinject.io/on-change/id"

func (p *proc) add(f fakeProcess) {
	p.t.Helper()
	dir := filepath.Join(p.root, strconv.Itoa(f.pid))
	must(p.t, os.MkdirAll(filepath.Join(dir, "ns"), 0o755))
	comm := f.comm
	if comm == "" {
		comm = "app"
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime vsize ...
	stat := strconv.Itoa(f.pid) + " (" + comm + ") S " + strconv.Itoa(f.ppid) + " 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 " +
		strconv.FormatUint(f.start, 10) + " 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	must(p.t, os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o444))
	if f.mnt != "" {
		must(p.t, os.Symlink("mnt:["+f.mnt+"]", filepath.Join(dir, "ns", "mnt")))
	}
	fsRoot := filepath.Join(p.root, "..", "fs", strconv.Itoa(f.pid))
	must(p.t, os.MkdirAll(fsRoot, 0o755))
	if f.nonce != "" {
		must(p.t, os.MkdirAll(filepath.Join(fsRoot, filepath.Dir(idPath)), 0o755))
		must(p.t, os.WriteFile(filepath.Join(fsRoot, idPath), []byte(f.nonce+"\n"), 0o444))
	}
	must(p.t, os.Symlink(fsRoot, filepath.Join(dir, "root")))
}

func (p *proc) self(pid int) {
	p.t.Helper()
	must(p.t, os.Symlink(strconv.Itoa(pid), filepath.Join(p.root, "self")))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want Proc
		err  bool
	}{
		{in: "1 (pause) S 0 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 4242 1000000 100", want: Proc{PID: 1, PPID: 0, Start: 4242}},
		// The command may hold spaces and parentheses.
		{in: "7 (a) b (c) S 3 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 99 1000000 100", want: Proc{PID: 7, PPID: 3, Start: 99}},
		{in: "7 (a S 3", err: true},
		{in: "7 (a) S 3 1", err: true},
		{in: "7 (a) S x 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 99 1", err: true},
	}
	for _, tc := range tests {
		pid, _ := strconv.Atoi(strings.Fields(tc.in)[0])
		got, err := parseStat(pid, tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: error %v, want error %v", tc.in, err, tc.err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestMarker(t *testing.T) {
	for _, m := range []Marker{{Ticks: 123456}, {Ticks: 1, Secrets: []string{"app-pgsql"}}, {Ticks: 2, Secrets: []string{"a", "b"}}} {
		got, err := DecodeMarker(m.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	}
	for _, bad := range []string{"", "x\n", "-1\n", "\n1\n"} {
		if _, err := DecodeMarker([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestMainInMountNamespace: the main process is the oldest process of the
// caller's mount namespace, with or without a shared process namespace.
func TestMainInMountNamespace(t *testing.T) {
	tests := []struct {
		name  string
		procs []fakeProcess
		self  int
		want  int
	}{{
		name: "own PID namespace: PID 1",
		procs: []fakeProcess{
			{pid: 1, ppid: 0, start: 500, mnt: "A"},
			{pid: 12, ppid: 1, start: 700, mnt: "A"},  // a worker
			{pid: 30, ppid: 0, start: 9000, mnt: "A"}, // the probe
		},
		self: 30, want: 1,
	}, {
		name: "shared PID namespace: pause and other containers passed over",
		procs: []fakeProcess{
			{pid: 1, ppid: 0, start: 100, mnt: "P", comm: "pause"},
			{pid: 7, ppid: 0, start: 200, mnt: "S"},   // the sidecar, older
			{pid: 20, ppid: 0, start: 500, mnt: "A"},  // the app
			{pid: 21, ppid: 0, start: 400, mnt: "B"},  // another container, older
			{pid: 25, ppid: 20, start: 800, mnt: "A"}, // the app's child
			{pid: 40, ppid: 0, start: 9000, mnt: "A"}, // the probe
		},
		self: 40, want: 20,
	}, {
		name: "a process whose namespace cannot be read is passed over",
		procs: []fakeProcess{
			{pid: 1, ppid: 0, start: 100},
			{pid: 9, ppid: 0, start: 500, mnt: "A"},
			{pid: 40, ppid: 0, start: 9000, mnt: "A"},
		},
		self: 40, want: 9,
	}, {
		name: "same start: the lower PID",
		procs: []fakeProcess{
			{pid: 3, ppid: 0, start: 500, mnt: "A"},
			{pid: 2, ppid: 0, start: 500, mnt: "A"},
		},
		self: 3, want: 2,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProc(t)
			for _, f := range tc.procs {
				p.add(f)
			}
			p.self(tc.self)
			got, err := MainInMountNamespace(p.root)
			if err != nil {
				t.Fatal(err)
			}
			if got.PID != tc.want {
				t.Errorf("main process %d, want %d", got.PID, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	const mainStart = 10_000 // 100 s after boot
	tests := []struct {
		name   string
		marker *Marker
		raw    string
		want   string
		err    bool
	}{
		{name: "no marker", want: ""},
		{name: "change before the start", marker: &Marker{Ticks: mainStart - 500}, want: ""},
		{name: "change more than the margin before the start", marker: &Marker{Ticks: mainStart - DurationTicks(StartMargin) - 1}, want: ""},
		{name: "change within the margin before the start", marker: &Marker{Ticks: mainStart - DurationTicks(StartMargin)},
			want: "the secrets it reads changed at 99.00 s after boot, and its main process (PID 1) started at 100.00 s: restarting it to read the new value (kvinject.io/on-change: restart)"},
		{name: "change after the start", marker: &Marker{Ticks: 123_456, Secrets: []string{"app-pgsql"}},
			want: "secret app-pgsql changed at 1234.56 s after boot, and its main process (PID 1) started at 100.00 s: restarting it to read the new value (kvinject.io/on-change: restart)"},
		{name: "two secrets", marker: &Marker{Ticks: 20_005, Secrets: []string{"a", "b", "c"}},
			want: "secrets a, b and c changed at 200.05 s after boot, and its main process (PID 1) started at 100.00 s: restarting it to read the new value (kvinject.io/on-change: restart)"},
		{name: "a marker that does not parse", raw: "soon\n", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProc(t)
			p.add(fakeProcess{pid: 1, ppid: 0, start: mainStart, mnt: "A"})
			p.add(fakeProcess{pid: 50, ppid: 0, start: 90_000, mnt: "A"})
			p.self(50)
			marker := filepath.Join(t.TempDir(), "changed")
			switch {
			case tc.marker != nil:
				must(t, os.WriteFile(marker, tc.marker.Encode(), 0o444))
			case tc.raw != "":
				must(t, os.WriteFile(marker, []byte(tc.raw), 0o444))
			}
			got, err := Check(p.root, marker)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestFindMains: the rule that finds each container's main process in a
// shared process namespace, and cannot pick another container's.
func TestFindMains(t *testing.T) {
	nonces := map[string]string{"app": "n-app", "worker": "n-worker", "stopped": "n-stopped"}
	tests := []struct {
		name  string
		procs []fakeProcess
		want  map[string]int
	}{{
		name: "each container's first process",
		procs: []fakeProcess{
			{pid: 1, ppid: 0, start: 100, comm: "pause"},
			{pid: 5, ppid: 0, start: 150},                   // the sidecar: no nonce
			{pid: 10, ppid: 0, start: 300, nonce: "n-app"},  // app
			{pid: 11, ppid: 10, start: 310, nonce: "n-app"}, // app's child
			{pid: 20, ppid: 0, start: 250, nonce: "n-worker"},
			{pid: 30, ppid: 0, start: 5000, nonce: "n-app"}, // kubectl exec into app
			{pid: 31, ppid: 0, start: 5000, nonce: "other"}, // a nonce of no target
		},
		want: map[string]int{"app": 10, "worker": 20},
	}, {
		name: "a child reparented to pause is not a main process",
		procs: []fakeProcess{
			{pid: 1, ppid: 0, start: 100, comm: "pause"},
			{pid: 12, ppid: 1, start: 200, nonce: "n-app"},
			{pid: 13, ppid: 0, start: 300, nonce: "n-app"},
		},
		want: map[string]int{"app": 13},
	}, {
		name: "a process whose filesystem cannot be read is passed over",
		procs: []fakeProcess{
			{pid: 10, ppid: 0, start: 300},
		},
		want: map[string]int{},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProc(t)
			for _, f := range tc.procs {
				p.add(f)
			}
			got, err := FindMains(p.root, idPath, nonces)
			if err != nil {
				t.Fatal(err)
			}
			pids := map[string]int{}
			for c, pr := range got {
				pids[c] = pr.PID
			}
			if diff := cmp.Diff(tc.want, pids); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDurationTicks(t *testing.T) {
	if got := DurationTicks(12*time.Second + 345*time.Millisecond); got != 1234 {
		t.Errorf("got %d, want 1234", got)
	}
}

// FuzzParseStat: a process names itself (its comm, field 2, holds any
// bytes but NUL and '/'), so a stat line is the pod's input: it parses or
// is refused, and the fields after the command are read whatever it holds.
func FuzzParseStat(f *testing.F) {
	f.Add(7, "a) b (c", uint64(99))
	f.Add(1, "pause", uint64(4242))
	f.Add(2, ") S 3 x", uint64(0))
	f.Fuzz(func(t *testing.T, pid int, comm string, start uint64) {
		line := strconv.Itoa(pid) + " (" + comm + ") S 3 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 " + strconv.FormatUint(start, 10) + " 1000000 100"
		got, err := parseStat(pid, line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if want := (Proc{PID: pid, PPID: 3, Start: start}); got != want {
			t.Fatalf("%q: got %+v, want %+v", line, got, want)
		}
		_, _ = parseStat(pid, comm) // any text: refused or parsed, never a panic
	})
}

// FuzzDecodeMarker: a marker decodes to what encodes back to it, or is refused.
func FuzzDecodeMarker(f *testing.F) {
	for _, s := range []string{"1\n", "123\napp-pgsql\n", "2\na,b\n", "", "x\n", "\n1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := DecodeMarker([]byte(s))
		if err != nil {
			return
		}
		again, err := DecodeMarker(m.Encode())
		if err != nil {
			t.Fatalf("%q: its encoding %q does not decode: %v", s, m.Encode(), err)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("%q (-decoded +decoded again):\n%s", s, diff)
		}
	})
}
