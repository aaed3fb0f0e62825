package onchange

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
)

// MainInMountNamespace returns the main process of the container the
// caller runs in: the oldest process in the caller's own mount namespace.
// Every container has a mount namespace of its own, made for its first
// process: any other process in it (its children, a probe, kubectl exec)
// started later. This holds with and without a shared process namespace,
// and with hostPID. A process whose namespace the caller may not read (it
// runs as another user, or made itself non-dumpable) is passed over.
func MainInMountNamespace(procRoot string) (Proc, error) {
	self, err := os.Readlink(procRoot + "/self/ns/mnt")
	if err != nil {
		return Proc{}, err
	}
	pids, err := PIDs(procRoot)
	if err != nil {
		return Proc{}, err
	}
	var main Proc
	found := false
	for _, pid := range pids {
		ns, err := os.Readlink(procRoot + "/" + strconv.Itoa(pid) + "/ns/mnt")
		if err != nil || ns != self {
			continue
		}
		p, err := ReadStat(procRoot, pid)
		if err != nil {
			continue // ended meanwhile
		}
		if !found || older(p, main) {
			main, found = p, true
		}
	}
	if !found {
		return Proc{}, errors.New("no process in this mount namespace, not even this one")
	}
	return main, nil
}

// ErrNoMarker: the container's reads have not changed since the pod started.
var ErrNoMarker = errors.New("no change marker")

// Check is the liveness check of a container with kvinject.io/on-change:
// restart. It returns a message, naming the secrets, when the change
// markerFile records is not older than the container's main process by
// StartMargin (the container must restart to read it), "" when it is, or
// when there is no marker.
func Check(procRoot, markerFile string) (string, error) {
	b, err := readBounded(markerFile, maxMarkerBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	m, err := DecodeMarker(b)
	if err != nil {
		return "", errors.New(markerFile + ": " + err.Error())
	}
	main, err := MainInMountNamespace(procRoot)
	if err != nil {
		return "", err
	}
	if main.Start > m.Ticks+DurationTicks(StartMargin) {
		return "", nil
	}
	what := "the secrets it reads"
	switch len(m.Secrets) {
	case 0:
	case 1:
		what = "secret " + m.Secrets[0]
	default:
		what = "secrets " + join(m.Secrets)
	}
	return what + " changed at " + seconds(m.Ticks) + " s after boot, and its main process (PID " + strconv.Itoa(main.PID) +
		") started at " + seconds(main.Start) + " s: restarting it to read the new value (kvinject.io/on-change: restart)", nil
}

// FindMains returns, for each container of nonces (container name to the
// nonce the agent wrote into its directory), its main process in a shared
// process namespace: the oldest process whose parent is outside the
// namespace (PPID 0: a container's first process, or one a probe or
// kubectl exec started in it) and whose own filesystem holds the
// container's nonce at idPath. Another container cannot hold the nonce: it
// is in a directory only that container mounts. Reading a process's
// filesystem (/proc/PID/root) takes the process's own user and group. A
// container without such a process (not running) is not in the result.
func FindMains(procRoot, idPath string, nonces map[string]string) (map[string]Proc, error) {
	pids, err := PIDs(procRoot)
	if err != nil {
		return nil, err
	}
	byNonce := make(map[string]string, len(nonces))
	for c, n := range nonces {
		if n != "" {
			byNonce[n] = c
		}
	}
	mains := map[string]Proc{}
	for _, pid := range pids {
		p, err := ReadStat(procRoot, pid)
		if err != nil || p.PPID != 0 {
			continue
		}
		b, err := readBounded(procRoot+"/"+strconv.Itoa(pid)+"/root"+idPath, 256)
		if err != nil {
			continue
		}
		c, ok := byNonce[string(bytes.TrimSpace(b))]
		if !ok {
			continue
		}
		if cur, ok := mains[c]; !ok || older(p, cur) {
			mains[c] = p
		}
	}
	return mains, nil
}

// seconds writes clock ticks as seconds with two decimals.
func seconds(ticks uint64) string {
	frac := strconv.FormatUint(ticks%TicksPerSecond, 10)
	if len(frac) < 2 {
		frac = "0" + frac
	}
	return strconv.FormatUint(ticks/TicksPerSecond, 10) + "." + frac
}

func join(names []string) string {
	s := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			s += " and "
		default:
			s += ", "
		}
		s += n
	}
	return s
}
