package initagent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/go-logr/logr"

	"github.com/kvinject/kvinject/internal/spec"
)

// Stdio is what the agent's command may touch of the process, passed
// explicitly so that it runs in tests exactly as in the pod.
type Stdio struct {
	Out, Err io.Writer
	Getenv   func(string) string
}

// Main is the agent's command line, run by the kvinject-agent binary in the
// init container and by `kvinject agent`; prog names it in messages. Exit
// codes: 0 every file written (or --check passed), 1 problems (one line
// each on stderr), 2 bad flags or spec.
func Main(ctx context.Context, prog string, args []string, stdio Stdio) int {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	check := fs.Bool("check", false, "validate the spec and print what would be fetched and written; fetch nothing")
	timeout := fs.Duration("timeout", DefaultTimeout, "overall time limit, retries included")
	var cloud spec.Cloud
	fs.Var(&cloud, "cloud", spec.CloudUsage()+" (default: from the spec's vault names)")
	concurrency := fs.Int("concurrency", DefaultConcurrency, fmt.Sprintf("secrets fetched in parallel (1 to %d)", MaxConcurrency))
	dir := fs.String("dir", "", "where the agent writes the files (default: the spec's mountPath)")
	logFormat := fs.String("log-format", "json", "log format on stderr: json or text")
	refresh := fs.Duration("refresh", 0, fmt.Sprintf("keep the files current: re-read the secrets this often until stopped, rewriting them when a version changes; the kvinject-refresh sidecar runs this (the webhook asks for at least %v)", spec.MinRefresh))
	execWrapper := fs.String("exec-wrapper", spec.ExecSource, "the exec wrapper to copy into --bin-dir for env variables delivered through it")
	binDir := fs.String("bin-dir", spec.BinMountPath, "where the exec wrapper is copied (the "+spec.BinVolumeName+" volume)")
	termLog := fs.String("termination-log", "/dev/termination-log", "also write the problem lines to this file when it exists (kubectl describe pod shows it)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nReads %s and the AZURE_* variables, fetches the Key Vault secrets and writes all files or none.\n\nFlags:\n", prog, spec.EnvSpec)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stdio.Err, "%s: unexpected arguments %q\n", prog, fs.Args())
		return 2
	}
	var handler slog.Handler
	switch *logFormat {
	case "json":
		handler = slog.NewJSONHandler(stdio.Err, nil)
	case "text":
		handler = slog.NewTextHandler(stdio.Err, nil)
	default:
		fmt.Fprintf(stdio.Err, "%s: --log-format %q: want json or text\n", prog, *logFormat)
		return 2
	}
	logger := logr.FromSlogHandler(handler)

	raw := stdio.Getenv(spec.EnvSpec)
	if raw == "" {
		fmt.Fprintf(stdio.Err, "error: %s is not set: the agent runs in the %s init container the webhook adds, which sets it\n", spec.EnvSpec, spec.AgentContainerName)
		return 2
	}
	s, err := spec.Decode([]byte(raw))
	if err != nil {
		fmt.Fprintf(stdio.Err, "error: %v\n", err)
		return 2
	}
	agent, err := New(Options{
		Spec:        s,
		Env:         EnvFrom(stdio.Getenv),
		Cloud:       cloud,
		Dir:         *dir,
		Timeout:     *timeout,
		Concurrency: *concurrency,
		Out:         stdio.Out,
		Err:         stdio.Err,
		Logger:      logger,
		Now:         time.Now,

		TerminationLog: *termLog,
		ExecWrapper:    *execWrapper,
		BinDir:         *binDir,
	})
	if err != nil {
		fmt.Fprintf(stdio.Err, "error: %v\n", err)
		return 2
	}
	if *check {
		if err := agent.Check(); err != nil {
			fmt.Fprintf(stdio.Err, "error: %v\n", err)
			return 1
		}
		return 0
	}
	if *refresh != 0 {
		if err := agent.Refresh(ctx, *refresh); errors.Is(err, ErrFailed) {
			return 1
		} else if err != nil {
			fmt.Fprintf(stdio.Err, "error: %v\n", err)
			return 2
		}
		return 0
	}
	if err := agent.Run(ctx); err != nil {
		if !errors.Is(err, ErrFailed) {
			fmt.Fprintf(stdio.Err, "error: %v\n", err)
		}
		return 1
	}
	return 0
}
