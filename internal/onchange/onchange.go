// Package onchange is what kvinject.io/on-change needs of the pod's
// processes: the marker the kvinject-refresh sidecar writes when a refresh
// changed what a container reads, the liveness check kvinject-exec answers
// from it (restart), and the rule that finds a container's main process
// (signal).
//
// Times are on the boot clock (CLOCK_BOOTTIME), in the kernel's clock
// ticks (USER_HZ, 100 a second on every Linux architecture Kubernetes runs
// on): the clock and the unit of a process's start time in /proc/PID/stat.
//
// It imports no fmt, no network and no Kubernetes code: the exec wrapper,
// which runs the check in application containers, stays small.
package onchange

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// TicksPerSecond is USER_HZ, the unit of /proc/PID/stat's start time.
const TicksPerSecond = 100

// StartMargin: a container whose main process started less than this after
// a change is restarted too. The kubelet reads a fileKeyRef variable from
// the env file before it creates the container, so a process that started
// just after the change may still hold the old value.
const StartMargin = time.Second

// maxMarkerBytes bounds what the check reads of a marker.
const maxMarkerBytes = 4096

// Marker is what the sidecar writes into a container's directory when a
// refresh changed what the container reads: when, and which secrets (names,
// never values), for the check's message.
type Marker struct {
	// Ticks is the boot clock's time of the change, in clock ticks.
	Ticks uint64
	// Secrets names the secrets whose change the container reads.
	Secrets []string
}

// Encode writes the marker: the ticks on the first line, the secrets'
// names on the second.
func (m Marker) Encode() []byte {
	return []byte(strconv.FormatUint(m.Ticks, 10) + "\n" + strings.Join(m.Secrets, ",") + "\n")
}

// ErrMarker says a marker does not parse.
var ErrMarker = errors.New("not a kvinject change marker")

// DecodeMarker reads a marker Encode wrote.
func DecodeMarker(b []byte) (Marker, error) {
	first, rest, _ := strings.Cut(string(b), "\n")
	ticks, err := strconv.ParseUint(first, 10, 64)
	if err != nil {
		return Marker{}, ErrMarker
	}
	m := Marker{Ticks: ticks}
	if line, _, _ := strings.Cut(rest, "\n"); line != "" {
		m.Secrets = strings.Split(line, ",")
	}
	return m, nil
}

// DurationTicks converts a boot clock reading to clock ticks.
func DurationTicks(d time.Duration) uint64 {
	return uint64(d / (time.Second / TicksPerSecond))
}

// Proc is a process as /proc/PID/stat shows it.
type Proc struct {
	PID  int
	PPID int
	// Start is the process's start time on the boot clock, in clock ticks.
	Start uint64
}

// ReadStat reads /proc/PID/stat below procRoot.
func ReadStat(procRoot string, pid int) (Proc, error) {
	b, err := readBounded(procRoot+"/"+strconv.Itoa(pid)+"/stat", 4096)
	if err != nil {
		return Proc{}, err
	}
	return parseStat(pid, string(b))
}

var errStat = errors.New("cannot parse /proc/PID/stat")

// parseStat reads the parent's PID (field 4) and the start time (field
// 22). The command (field 2) is in parentheses and may hold anything, ')'
// and spaces included: the fields after it start after its last ')'.
func parseStat(pid int, s string) (Proc, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Proc{}, errStat
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 22-3+1 {
		return Proc{}, errStat
	}
	ppid, err1 := strconv.Atoi(f[4-3])
	start, err2 := strconv.ParseUint(f[22-3], 10, 64)
	if err1 != nil || err2 != nil {
		return Proc{}, errStat
	}
	return Proc{PID: pid, PPID: ppid, Start: start}, nil
}

// PIDs lists the processes below procRoot, in no particular order.
func PIDs(procRoot string) ([]int, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// older says whether a started before b: earlier start, then lower PID.
func older(a, b Proc) bool {
	return a.Start < b.Start || a.Start == b.Start && a.PID < b.PID
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, errors.New(path + " is larger than " + strconv.FormatInt(max, 10) + " bytes")
	}
	return b, nil
}
