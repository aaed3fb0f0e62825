package initagent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// peakRSSKiB is the process's peak resident set (VmHWM) on Linux, 0
// elsewhere. Unlike getrusage's maxrss it starts at exec, so it is the
// agent's own.
func peakRSSKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
