// Package hygiene holds checks on the repository itself that CI keeps true:
// what git tracks, not what the code does.
package hygiene

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is the top of the checkout this test runs in.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// executableMagic are the first bytes of the executable formats a Go
// toolchain writes: ELF, Mach-O (32, 64, universal) and PE.
var executableMagic = [][]byte{
	[]byte("\x7fELF"),
	{0xfe, 0xed, 0xfa, 0xce}, {0xce, 0xfa, 0xed, 0xfe},
	{0xfe, 0xed, 0xfa, 0xcf}, {0xcf, 0xfa, 0xed, 0xfe},
	{0xca, 0xfe, 0xba, 0xbe},
	[]byte("MZ"),
}

// maxTrackedBytes is the largest file git may track: build outputs and
// captures are larger, every source and golden file is far smaller.
const maxTrackedBytes = 1 << 20

// TestNoTrackedBuildOutputs fails on a compiled program or an oversized file
// in git: build outputs belong in bin/ and _out/, which are ignored.
func TestNoTrackedBuildOutputs(t *testing.T) {
	root := repoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var problems []string
	for name := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		path := filepath.Join(root, name)
		info, err := os.Lstat(path)
		if err != nil || !info.Mode().IsRegular() {
			continue // deleted in the work tree, or a link
		}
		if info.Size() > maxTrackedBytes {
			problems = append(problems, fmt.Sprintf("%s: %d bytes, more than 1 MiB", name, info.Size()))
			continue
		}
		head := make([]byte, 4)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.Read(head)
		f.Close()
		for _, magic := range executableMagic {
			if bytes.HasPrefix(head[:n], magic) && !isText(path) {
				problems = append(problems, name+": a compiled program")
				break
			}
		}
	}
	for _, p := range problems {
		t.Errorf("%s: remove it from git (git rm --cached) and let the Makefile build it into bin/", p)
	}
}

// isText says whether a file that starts like "MZ" is plain text after all.
func isText(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return !bytes.ContainsRune(b, 0)
}
