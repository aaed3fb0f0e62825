//go:build linux

package residency

import (
	"os"
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
	want := []Mapping{{0x400000, 0xa00000}, {0xa00000, 0xf00000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
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
