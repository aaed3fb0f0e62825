package spec

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// What AnnotationOnChange says, and where the kvinject-refresh sidecar and the
// target containers meet to act on it.
const (
	// AnnotationOnChange, with AnnotationRefresh, says what happens to a
	// target container when a refresh changed what it reads (a file it
	// mounts, an env variable it gets): OnChangeRestart, or
	// OnChangeSignalPrefix followed by a signal's name (OnChangeSignals).
	// Default: none, the files change and nothing else happens.
	AnnotationOnChange = Prefix + "on-change"
	// OnChangeRestart: the container's kubelet restarts it, through a
	// liveness check kvinject-exec answers (CheckChangedFlag).
	OnChangeRestart = "restart"
	// OnChangeSignalPrefix + NAME: the sidecar sends the signal NAME to
	// the container's main process.
	OnChangeSignalPrefix = "signal:"

	// OnChangeVolumeName is the memory-backed emptyDir holding one
	// directory per target container: the agent and the sidecar mount it
	// whole, read-write, at OnChangeStateDir; each target container mounts
	// its own directory (subPath: its name), read-only, at OnChangeMountPath.
	OnChangeVolumeName = "kvinject-on-change"
	// OnChangeStateDir is where the agent and the sidecar see OnChangeVolumeName.
	OnChangeStateDir = "/var/run/kvinject.io/containers"
	// OnChangeMountPath is where a target container sees its own directory.
	OnChangeMountPath = "/var/run/kvinject.io/on-change"
	// OnChangeChangedFile, in a container's directory, holds the time of
	// the last change that container reads (restart).
	OnChangeChangedFile = "changed"
	// OnChangeIDFile, in a container's directory, holds a random nonce the
	// agent writes: the sidecar signals a process only when it sees this
	// nonce at OnChangeMountPath in the process's own filesystem (signal).
	OnChangeIDFile = "id"
)

// OnChangeSignals are the signals AnnotationOnChange may send: the ones apps
// use to reload or to stop. SIGKILL and SIGSTOP cannot be handled.
var OnChangeSignals = []string{"SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH"}

// OnChange is what the kvinject-refresh sidecar does after a refresh that
// changed what a container reads.
type OnChange struct {
	// Action is OnChangeRestart or OnChangeSignal.
	Action string `json:"action"`
	// Signal is the signal's name (one of OnChangeSignals) for OnChangeSignal.
	Signal string `json:"signal,omitempty"`
	// Containers are the containers acted on, each with what it reads.
	Containers []Consumer `json:"containers"`
}

// OnChangeSignal is OnChange.Action for OnChangeSignalPrefix.
const OnChangeSignal = "signal"

// Consumer is a container and what it reads of the set the agent writes.
type Consumer struct {
	Name string `json:"name"`
	// Files: the container mounts the files (all of them).
	Files bool `json:"files,omitempty"`
	// Env are the env variables it gets.
	Env []string `json:"env,omitempty"`
}

// ParseOnChange reads AnnotationOnChange's value: "restart" or
// "signal:NAME", exactly (NAME with its SIG prefix, upper case, as
// Kubernetes' own stopSignal has it). The error says what is allowed and,
// for a near miss, what was meant.
func ParseOnChange(v string) (action, signal string, err error) {
	if v == OnChangeRestart {
		return OnChangeRestart, "", nil
	}
	if name, ok := strings.CutPrefix(v, OnChangeSignalPrefix); ok && slices.Contains(OnChangeSignals, name) {
		return OnChangeSignal, name, nil
	}
	allowed := fmt.Sprintf("%s or %s<NAME> with NAME one of %s", OnChangeRestart, OnChangeSignalPrefix, strings.Join(OnChangeSignals, ", "))
	if s := onChangeSuggestion(v); s != "" {
		return "", "", fmt.Errorf("%s must be %s: did you mean %s?", Quote(v), allowed, s)
	}
	return "", "", fmt.Errorf("%s must be %s", Quote(v), allowed)
}

// onChangeSuggestion is the valid value a near miss meant: another case,
// spaces, a signal without its SIG prefix or without "signal:".
func onChangeSuggestion(v string) string {
	t := strings.ToUpper(strings.TrimSpace(v))
	if t == strings.ToUpper(OnChangeRestart) {
		return OnChangeRestart
	}
	name := strings.TrimSpace(strings.TrimPrefix(t, strings.ToUpper(OnChangeSignalPrefix)))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if slices.Contains(OnChangeSignals, name) {
		return OnChangeSignalPrefix + name
	}
	return ""
}

// FormatOnChange writes an action the way AnnotationOnChange takes it.
func FormatOnChange(action, signal string) string {
	if action == OnChangeSignal {
		return OnChangeSignalPrefix + signal
	}
	return action
}

// validate checks an OnChange against the spec it belongs to.
func (oc *OnChange) validate(s *Spec) error {
	if _, _, err := ParseOnChange(FormatOnChange(oc.Action, oc.Signal)); err != nil || (oc.Action == OnChangeRestart && oc.Signal != "") {
		return fmt.Errorf("action %s, signal %s: want %s or %s with a signal", Quote(oc.Action), Quote(oc.Signal), OnChangeRestart, OnChangeSignal)
	}
	if len(oc.Containers) == 0 {
		return errors.New("no containers")
	}
	env := map[string]bool{}
	for _, e := range s.Env {
		env[e.Name] = true
	}
	seen := map[string]bool{}
	for _, c := range oc.Containers {
		if err := ValidateContainerName(c.Name); err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("container %s listed twice", Quote(c.Name))
		}
		seen[c.Name] = true
		if c.Files && len(s.Files) == 0 {
			return fmt.Errorf("container %s reads files, and there are none", Quote(c.Name))
		}
		if !c.Files && len(c.Env) == 0 {
			return fmt.Errorf("container %s reads nothing", Quote(c.Name))
		}
		if oc.Action == OnChangeSignal && !c.Files {
			return fmt.Errorf("container %s reads only env variables, which a signal cannot change", Quote(c.Name))
		}
		for _, n := range c.Env {
			if !env[n] {
				return fmt.Errorf("container %s: env %s is not in the spec's env", Quote(c.Name), Quote(n))
			}
		}
	}
	return nil
}

// ValidateContainerName checks a container name as Kubernetes does (a DNS
// label): it names a directory and a subPath.
func ValidateContainerName(n string) error {
	ok := len(n) > 0 && len(n) <= 63 && n[0] != '-' && n[len(n)-1] != '-'
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("container name %s is not a DNS label", Quote(n))
	}
	return nil
}
