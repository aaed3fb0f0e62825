package benchkit

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcMem is a process's memory as /proc/PID/status has it, in KiB: the
// resident set now (VmRSS), its split into anonymous memory (RssAnon: the
// heap, stacks, the Go runtime) and file pages (RssFile: the executable,
// shared through the page cache), and the resident set's high-water mark
// (VmHWM), the only peak the kernel keeps.
type ProcMem struct {
	RSS, Anon, File, HWM int64
}

// ReadProcStatus reads pid's memory once.
func ReadProcStatus(pid int) (ProcMem, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMem{}, err
	}
	m, _ := ParseProcStatus(raw)
	return m, nil
}

// ParseProcStatus reads the memory lines of a /proc/PID/status. ok is false
// when none was there (the process had ended, or the read was cut short),
// so that a poller can tell a reading from none.
func ParseProcStatus(status []byte) (m ProcMem, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), ":")
		if !found {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		case "VmHWM":
			dst = &m.HWM
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err == nil {
			*dst, ok = n, true
		}
	}
	return m, ok
}

// Max is the larger of m and o in every field: the peaks over readings.
func (m ProcMem) Max(o ProcMem) ProcMem {
	return ProcMem{RSS: max(m.RSS, o.RSS), Anon: max(m.Anon, o.Anon), File: max(m.File, o.File), HWM: max(m.HWM, o.HWM)}
}
