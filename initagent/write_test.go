package initagent

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// listing describes a directory tree: name -> "dir 0755", "link TARGET" or
// "file 0400 CONTENT".
func listing(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		// Timestamped directory names vary: show them by prefix.
		key := rel
		if strings.HasPrefix(rel, dataDirPrefix) {
			_, rest, _ := strings.Cut(rel, "/")
			key = dataDirPrefix + "*"
			if rest != "" {
				key += "/" + rest
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			if strings.HasPrefix(target, dataDirPrefix) {
				target = dataDirPrefix + "*"
			}
			out[key] = "link " + target
		case fi.IsDir():
			out[key] = fmt.Sprintf("dir %04o", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[key] = fmt.Sprintf("file %04o %s", fi.Mode().Perm(), b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteFiles(t *testing.T) {
	old := syscall.Umask(0o077) // modes must not depend on the umask
	defer syscall.Umask(old)
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	first := []FileData{
		{Name: "username", Mode: 0o400, Data: []byte("superman")},
		{Name: "password", Mode: 0o440, Data: []byte("louiselane")},
		{Name: "gone-later", Mode: 0o444, Data: []byte("x")},
	}
	if _, err := WriteFiles(dir, first, now); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	want := map[string]string{
		"..data":                  "link ..kvinject_*",
		"..kvinject_*":            "dir 0755",
		"..kvinject_*/username":   "file 0400 superman",
		"..kvinject_*/password":   "file 0440 louiselane",
		"..kvinject_*/gone-later": "file 0444 x",
		"username":                "link ..data/username",
		"password":                "link ..data/password",
		"gone-later":              "link ..data/gone-later",
	}
	if diff := cmp.Diff(want, listing(t, dir)); diff != "" {
		t.Errorf("after the first write (-want +got):\n%s", diff)
	}
	for _, f := range first {
		b, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil || string(b) != string(f.Data) {
			t.Errorf("read %s through its symlink = %q, %v; want %q", f.Name, b, err, f.Data)
		}
	}

	// A second run (the init container restarted) replaces the set.
	second := []FileData{
		{Name: "username", Mode: 0o400, Data: []byte("clark")},
		{Name: "password", Mode: 0o400, Data: []byte("lois")},
		{Name: "new", Mode: 0o444, Data: nil},
	}
	if _, err := WriteFiles(dir, second, now.Add(time.Second)); err != nil {
		t.Fatalf("second WriteFiles: %v", err)
	}
	want = map[string]string{
		"..data":                "link ..kvinject_*",
		"..kvinject_*":          "dir 0755",
		"..kvinject_*/username": "file 0400 clark",
		"..kvinject_*/password": "file 0400 lois",
		"..kvinject_*/new":      "file 0444 ",
		"username":              "link ..data/username",
		"password":              "link ..data/password",
		"new":                   "link ..data/new",
	}
	if diff := cmp.Diff(want, listing(t, dir)); diff != "" {
		t.Errorf("after the second write (-want +got):\n%s", diff)
	}
}

func TestWriteFilesAllOrNone(t *testing.T) {
	files := []FileData{
		{Name: "username", Mode: 0o400, Data: []byte("superman")},
		{Name: "password", Mode: 0o400, Data: []byte("louiselane")},
	}
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		files  []FileData
		errHas string
	}{
		{"..data is a directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "..data"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, files, "switch"},
		{"a file the agent did not write", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "password"), []byte("other"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, files, "did not write"},
		{"a symlink elsewhere", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "password")); err != nil {
				t.Fatal(err)
			}
		}, files, "did not write"},
		{"duplicate names", func(*testing.T, string) {}, append(files, files[0]), "duplicate"},
		{"reserved name", func(*testing.T, string) {}, []FileData{{Name: "..data", Mode: 0o400}}, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			before := listing(t, dir)
			_, err := WriteFiles(dir, tt.files, time.Now())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("WriteFiles error = %v, want one containing %q", err, tt.errHas)
			}
			if diff := cmp.Diff(before, listing(t, dir)); diff != "" {
				t.Errorf("a failed write left changes (-before +after):\n%s", diff)
			}
		})
	}
}

func TestWriteFilesFailureKeepsPreviousSet(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteFiles(dir, []FileData{{Name: "a", Mode: 0o444, Data: []byte("1")}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	before := listing(t, dir)
	// The second set collides with a foreign file: nothing may change.
	if err := os.WriteFile(filepath.Join(dir, "b"), []byte("foreign"), 0o644); err != nil {
		t.Fatal(err)
	}
	before["b"] = "file 0644 foreign"
	_, err := WriteFiles(dir, []FileData{{Name: "a", Mode: 0o444, Data: []byte("2")}, {Name: "b", Mode: 0o444, Data: []byte("2")}}, time.Now())
	if err == nil {
		t.Fatal("WriteFiles succeeded over a foreign file")
	}
	if diff := cmp.Diff(before, listing(t, dir)); diff != "" {
		t.Errorf("a failed write changed the previous set (-before +after):\n%s", diff)
	}
}

func TestWriteFilesNotADirectory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFiles(p, nil, time.Now()); err == nil {
		t.Error("WriteFiles into a file succeeded")
	}
	if _, err := WriteFiles(filepath.Join(p, "missing"), nil, time.Now()); err == nil {
		t.Error("WriteFiles into a missing directory succeeded")
	}
}

// TestWriteFilesReadersSeeWholeSets swaps between two sets while readers
// read: a reader that resolves ..data once sees a complete set, and a read
// through a file's symlink gives a whole value, never part of one.
func TestWriteFilesReadersSeeWholeSets(t *testing.T) {
	dir := t.TempDir()
	mk := func(v string) []FileData {
		var fs []FileData
		for i := range 5 {
			fs = append(fs, FileData{Name: fmt.Sprintf("f%d", i), Mode: 0o444, Data: []byte(strings.Repeat(v, 4096))})
		}
		return fs
	}
	sets := [][]FileData{mk("A"), mk("B")}
	if _, err := WriteFiles(dir, sets[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				target, err := os.Readlink(filepath.Join(dir, "..data"))
				if err != nil {
					bad.Store("readlink: " + err.Error())
					return
				}
				seen := map[byte]bool{}
				for i := range 5 {
					b, err := os.ReadFile(filepath.Join(dir, target, fmt.Sprintf("f%d", i)))
					if err != nil {
						// The writer removed this old set after the reader
						// resolved it: the kubelet's readers see the same.
						break
					}
					if len(b) != 4096 {
						bad.Store(fmt.Sprintf("partial file: %d bytes", len(b)))
					}
					seen[b[0]] = true
				}
				if len(seen) > 1 {
					bad.Store("a mixed set")
				}
				b, err := os.ReadFile(filepath.Join(dir, "f0"))
				if err == nil && len(b) != 4096 {
					bad.Store(fmt.Sprintf("partial file through the symlink: %d bytes", len(b)))
				}
			}
		})
	}
	for i := range 40 {
		if _, err := WriteFiles(dir, sets[i%2], time.Now()); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Error(v)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if len(names) != 7 { // ..data, one ..kvinject_*, f0-f4
		t.Errorf("directory holds %q, want ..data, one data directory and 5 files", names)
	}
}
