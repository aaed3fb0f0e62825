//go:build linux

package residency

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadOnlyMappings(t *testing.T) {
	maps := `00400000-00a00000 r-xp 00000000 08:01 123 /kvinject-agent
00a00000-00f00000 r--p 00600000 08:01 123 /kvinject-agent
00f00000-00f20000 rw-p 00b00000 08:01 123 /kvinject-agent
00f20000-00f40000 rw-p 00000000 00:00 0
01000000-01001000 r--s 00000000 08:01 123 /kvinject-agent
02000000-02001000 r--p 00000000 08:01 456 /other
zz-00400000 r-xp 00000000 08:01 123 /kvinject-agent
c000000000-c000400000 rw-p 00000000 00:00 0 [heap]
`
	got := ReadOnlyMappings([]byte(maps), "/kvinject-agent")
	want := []Mapping{{Start: 0x400000, End: 0xa00000, Exec: true}, {Start: 0xa00000, End: 0xf00000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// elf64 is an ELF64 little-endian header with program headers of the
// types given.
func elf64(types ...uint32) []byte {
	const phoff, entsize = 64, 56
	b := make([]byte, phoff+entsize*len(types))
	copy(b, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint64(b[32:], phoff)
	binary.LittleEndian.PutUint16(b[54:], entsize)
	binary.LittleEndian.PutUint16(b[56:], uint16(len(types)))
	for i, typ := range types {
		binary.LittleEndian.PutUint32(b[phoff+i*entsize:], typ)
	}
	return b
}

// elf32be is an ELF32 big-endian header with program headers of the
// types given.
func elf32be(types ...uint32) []byte {
	const phoff, entsize = 52, 32
	b := make([]byte, phoff+entsize*len(types))
	copy(b, "\x7fELF\x01\x02\x01")
	binary.BigEndian.PutUint32(b[28:], phoff)
	binary.BigEndian.PutUint16(b[42:], entsize)
	binary.BigEndian.PutUint16(b[44:], uint16(len(types)))
	for i, typ := range types {
		binary.BigEndian.PutUint32(b[phoff+i*entsize:], typ)
	}
	return b
}

func TestHasRelro(t *testing.T) {
	const load, dynamic, stack = 1, 2, 0x6474e551
	for _, tc := range []struct {
		name    string
		elf     []byte
		want    bool
		wantErr bool
	}{
		{"static executable", elf64(6, load, load, stack), false, false},
		{"relocated executable", elf64(6, load, load, dynamic, ptGNURelro, stack), true, false},
		{"ELF32 big-endian with relro", elf32be(load, ptGNURelro), true, false},
		{"ELF32 big-endian without", elf32be(load, dynamic), false, false},
		{"not ELF", []byte("#!/bin/sh\necho hello world, a script and no ELF file\n"), false, true},
		{"truncated", elf64(load, ptGNURelro)[:70], false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HasRelro(bytes.NewReader(tc.elf))
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("HasRelro = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestReleaseExecutable: the resident file pages drop, and the process
// goes on running the code it released.
func TestReleaseExecutable(t *testing.T) {
	before := rssFile(t)
	n, err := ReleaseExecutable()
	if err != nil || n == 0 {
		t.Fatalf("ReleaseExecutable = %d, %v", n, err)
	}
	after := rssFile(t)
	if after >= before {
		t.Errorf("RssFile %d kB before, %d kB after", before, after)
	}
	if s := strings.Repeat("x", 3); s != "xxx" { // runs code again
		t.Fatal(s)
	}
}

// TestReleaseExecutablePIE: a position-independent executable goes on
// running after it released its pages: the read-only data its loader
// relocated stays resident.
func TestReleaseExecutablePIE(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	bin := filepath.Join(t.TempDir(), "pie")
	build := exec.Command(goTool, "build", "-buildmode=pie", "-o", bin, "./testdata/pie")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build a PIE program here: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	want := "0 16 main.square x\n1 25 main.square x\n2 36 main.square x\n"
	if err != nil || string(out) != want {
		t.Errorf("the PIE program: %v\n%s\nwant output:\n%s", err, out, want)
	}
}

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile")
	return 0
}
