package initagent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/onchange"
	"github.com/kvinject/kvinject/internal/spec"
)

// signals are the signals kvinject.io/on-change may send (spec.OnChangeSignals).
var signals = map[string]unix.Signal{
	"SIGHUP": unix.SIGHUP, "SIGINT": unix.SIGINT, "SIGQUIT": unix.SIGQUIT, "SIGTERM": unix.SIGTERM,
	"SIGUSR1": unix.SIGUSR1, "SIGUSR2": unix.SIGUSR2, "SIGWINCH": unix.SIGWINCH,
}

// bootClock reads CLOCK_BOOTTIME, the clock of a process's start time in
// /proc/PID/stat.
func bootClock() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// prepareOnChange makes, before the app starts, what the refresh sidecar
// and the target containers share for kvinject.io/on-change: a directory
// per target container (each mounts its own), the nonce the sidecar finds
// a container's process by (signal), and the wrapper that answers the
// liveness check (restart). A nonce already written is kept.
func (a *Agent) prepareOnChange() []keyvault.Problem {
	oc := a.o.Spec.OnChange
	if oc == nil {
		return nil
	}
	if oc.Action == spec.OnChangeRestart && a.o.Spec.EnvDelivery != spec.DeliveryExec {
		if err := installWrapper(a.o.ExecWrapper, a.o.BinDir); err != nil {
			return []keyvault.Problem{wrapperProblem(a.o.ExecWrapper, a.o.BinDir, err)}
		}
	}
	for _, c := range oc.Containers {
		dir := filepath.Join(a.o.StateDir, c.Name)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			err = nil
		}
		if err == nil {
			err = os.Chmod(dir, 0o755) // whatever the umask
		}
		if err == nil && oc.Action == spec.OnChangeSignal {
			err = writeNonce(filepath.Join(dir, spec.OnChangeIDFile))
		}
		if err != nil {
			return []keyvault.Problem{{Cause: "cannot prepare " + dir + " for " + spec.AnnotationOnChange + ": " + firstLine(err.Error()),
				Fix: fmt.Sprintf("mount the %s emptyDir at %s in the agent container, writable", spec.OnChangeVolumeName, a.o.StateDir)}}
		}
	}
	return nil
}

func writeNonce(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return writeSmall(path, []byte(hex.EncodeToString(b)+"\n"))
}

// writeSmall replaces path with data, 0444, through a rename: a reader
// sees the old content or the new.
func writeSmall(path string, data []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeFile(tmp, data, 0o444); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// setChange is what a write changes: the files whose content changed and
// the env variables whose value changed.
type setChange struct {
	files, env []string
}

// diffSet compares what the new set holds with what dir holds now. A file
// or variable that is not there yet counts as changed.
func diffSet(dir string, files []FileData, envNames []string) setChange {
	var ch setChange
	for _, f := range files {
		old, err := os.ReadFile(filepath.Join(dir, f.Name))
		if f.Name == spec.EnvFileName {
			for _, n := range envNames {
				ov, ook, _ := execwrap.LookupEnv(old, n)
				nv, nok, _ := execwrap.LookupEnv(f.Data, n)
				if err != nil || ook != nok || ov != nv {
					ch.env = append(ch.env, n)
				}
			}
			continue
		}
		if err != nil || !bytes.Equal(old, f.Data) {
			ch.files = append(ch.files, f.Name)
		}
	}
	return ch
}

// containerChange is one container a change reaches, and why.
type containerChange struct {
	Name string
	// Files and Env are the changed files it mounts and variables it gets;
	// Secrets are the secrets they come from.
	Files, Env, Secrets []string
}

// affected returns the containers a change reaches, each once, however
// many of its files, variables and secrets changed: a container that
// mounts the files reads every file; one that gets variables reads those.
func affected(s *spec.Spec, ch setChange) []containerChange {
	fileSecrets := map[string][]string{}
	for _, f := range s.Files {
		refs := refsOf(f.Refs)
		if f.Secret != nil {
			refs = []spec.Ref{*f.Secret}
		}
		for _, r := range refs {
			fileSecrets[f.Name] = append(fileSecrets[f.Name], r.Name)
		}
	}
	envSecret := map[string]string{}
	for _, e := range s.Env {
		envSecret[e.Name] = e.Secret.Name
	}
	var out []containerChange
	for _, c := range s.OnChange.Containers {
		cc := containerChange{Name: c.Name}
		if c.Files {
			cc.Files = ch.files
			for _, f := range ch.files {
				cc.Secrets = append(cc.Secrets, fileSecrets[f]...)
			}
		}
		for _, n := range ch.env {
			if slices.Contains(c.Env, n) {
				cc.Env = append(cc.Env, n)
				cc.Secrets = append(cc.Secrets, envSecret[n])
			}
		}
		if len(cc.Files) == 0 && len(cc.Env) == 0 {
			continue
		}
		sort.Strings(cc.Secrets)
		cc.Secrets = slices.Compact(cc.Secrets)
		out = append(out, cc)
	}
	return out
}

func refsOf(m map[string]spec.Ref) []spec.Ref {
	out := make([]spec.Ref, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// actOnChange is what the sidecar does once a new set is in place: one
// action per container the change reaches, logged with the files,
// variables and secrets (names, never values) that changed for it.
func (a *Agent) actOnChange(ch setChange) {
	s := a.o.Spec
	if s.OnChange == nil {
		return
	}
	changes := affected(s, ch)
	if len(changes) == 0 {
		return
	}
	if s.OnChange.Action == spec.OnChangeRestart {
		a.markForRestart(changes)
		return
	}
	a.signal(changes)
}

func (cc containerChange) logValues() []any {
	kv := []any{"container", cc.Name}
	if len(cc.Files) > 0 {
		kv = append(kv, "files", cc.Files)
	}
	if len(cc.Env) > 0 {
		kv = append(kv, "env", cc.Env)
	}
	return append(kv, "secrets", cc.Secrets)
}

// markForRestart writes each container's change marker: its liveness
// check fails from now until the kubelet has restarted it.
func (a *Agent) markForRestart(changes []containerChange) {
	now, err := a.o.Boottime()
	if err != nil {
		a.o.Logger.Info("cannot restart the containers: the boot clock cannot be read", "error", err.Error())
		return
	}
	for _, cc := range changes {
		m := onchange.Marker{Ticks: onchange.DurationTicks(now), Secrets: cc.Secrets}
		path := filepath.Join(a.o.StateDir, cc.Name, spec.OnChangeChangedFile)
		if err := writeSmall(path, m.Encode()); err != nil {
			a.o.Logger.Info("cannot mark the container for restart", append(cc.logValues(), "error", firstLine(err.Error()))...)
			continue
		}
		a.o.Logger.Info("restarting container: its liveness check fails until the kubelet restarts it", cc.logValues()...)
	}
}

// signal sends the signal to each container's main process (found by
// onchange.FindMains), through a pidfd, so that a process that ended and
// whose PID was reused is never hit.
func (a *Agent) signal(changes []containerChange) {
	name := a.o.Spec.OnChange.Signal
	sig := signals[name]
	nonces := map[string]string{}
	for _, cc := range changes {
		b, err := os.ReadFile(filepath.Join(a.o.StateDir, cc.Name, spec.OnChangeIDFile))
		if err != nil {
			a.o.Logger.Info("cannot signal the container: no nonce", append(cc.logValues(), "error", firstLine(err.Error()))...)
			continue
		}
		nonces[cc.Name] = string(bytes.TrimSpace(b))
	}
	mains, err := onchange.FindMains(a.o.ProcRoot, spec.OnChangeMountPath+"/"+spec.OnChangeIDFile, nonces)
	if err != nil {
		a.o.Logger.Info("cannot signal the containers: the pod's processes cannot be listed", "error", firstLine(err.Error()))
		return
	}
	for _, cc := range changes {
		if _, ok := nonces[cc.Name]; !ok {
			continue
		}
		p, ok := mains[cc.Name]
		if !ok {
			a.o.Logger.Info("not signalled: the container is not running (it reads the new set when it starts), or runs as another user", append(cc.logValues(), "signal", name)...)
			continue
		}
		if err := a.sendSignal(p, sig); err != nil {
			a.o.Logger.Info("cannot signal the container", append(cc.logValues(), "signal", name, "pid", p.PID, "error", err.Error())...)
			continue
		}
		a.o.Logger.Info("signalled container", append(cc.logValues(), "signal", name, "pid", p.PID)...)
	}
}

// sendSignal signals p when it is still the process that was found: the
// pidfd holds it, and its start time says it is the same. Where pidfds are
// not allowed (an old kernel, a seccomp profile), kill(2) after the same
// check.
func (a *Agent) sendSignal(p onchange.Proc, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
			return err
		}
		fd = -1
	} else {
		defer unix.Close(fd)
	}
	if now, err := onchange.ReadStat(a.o.ProcRoot, p.PID); err != nil || now.Start != p.Start {
		return errors.New("the process ended before the signal")
	}
	if fd >= 0 {
		return unix.PidfdSendSignal(fd, sig, nil, 0)
	}
	return unix.Kill(p.PID, sig)
}

func envNames(s *spec.Spec) []string {
	names := make([]string, len(s.Env))
	for i, e := range s.Env {
		names[i] = e.Name
	}
	return names
}
