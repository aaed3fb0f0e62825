// Command kvinject-exec is the exec wrapper kvinject's webhook makes a
// container's command when it delivers environment variables without
// EnvFiles: it reads the env file the kvinject-agent init container wrote,
// sets the container's variables, puts their values where the kubelet's
// $(VAR) expansion would have, and execs the original program in its own
// place (same PID, signals go to the program, its exit status is the
// container's). It does one file read: no network, no Kubernetes or Azure
// code (internal/execwrap).
//
// With --check-changed=FILE it is first the liveness check of
// kvinject.io/on-change: restart (internal/onchange): it fails when FILE
// records a change of what the container reads after its main process
// started, and otherwise runs the probe's own command after "--", if any.
package main

import (
	"os"
	"syscall"

	"github.com/kvinject/kvinject/internal/execwrap"
	"github.com/kvinject/kvinject/internal/onchange"
)

func main() {
	c, err := execwrap.ParseArgs(os.Args[1:])
	if err != nil {
		fail(c.TerminationLog, &execwrap.Problem{Line: err.Error(), Code: 1})
	}
	if c.CheckChanged != "" {
		check(c)
	}
	plan, p := execwrap.Prepare(c, os.Environ())
	if p != nil {
		fail(c.TerminationLog, p)
	}
	err = syscall.Exec(plan.Path, plan.Argv, plan.Env)
	fail(c.TerminationLog, execwrap.CannotExecute(c.Args[0], err))
}

// check is the liveness check of kvinject.io/on-change: restart. It fails
// the probe when the container must restart to read a change; when it
// cannot tell (no /proc, a marker that does not parse), it says why on
// stderr and lets the probe pass: the container keeps running. With no
// program after it, it is the whole probe.
func check(c execwrap.Config) {
	msg, err := onchange.Check("/proc", c.CheckChanged)
	switch {
	case err != nil:
		os.Stderr.WriteString("kvinject-exec: cannot check for a change to restart for: " + err.Error() + "\n")
	case msg != "":
		fail("", &execwrap.Problem{Line: msg, Code: 1})
	}
	if len(c.Args) == 0 {
		os.Exit(0)
	}
}

// fail writes the problem's line to stderr (the container's log) and to
// the termination message file, which the kubelet made (outside Kubernetes
// there is none, and none is created), and exits.
func fail(terminationLog string, p *execwrap.Problem) {
	line := "kvinject-exec: " + p.Line + "\n"
	os.Stderr.WriteString(line)
	if terminationLog != "" {
		if f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
			_, _ = f.WriteString(line)
			_ = f.Close()
		}
	}
	os.Exit(p.Code)
}
