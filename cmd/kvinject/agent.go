package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-logr/logr"

	"github.com/kvinject/kvinject/initagent"
	"github.com/kvinject/kvinject/internal/spec"
)

// runAgent is `kvinject agent`, the init container. Exit codes: 0 every
// file written (or --check passed), 1 problems (one line each on stderr),
// 2 bad flags or spec.
func runAgent(ctx context.Context, args []string, io stdio) int {
	fs := flag.NewFlagSet("kvinject agent", flag.ContinueOnError)
	fs.SetOutput(io.err)
	check := fs.Bool("check", false, "validate the spec and print what would be fetched and written; fetch nothing")
	timeout := fs.Duration("timeout", initagent.DefaultTimeout, "overall time limit, retries included")
	cloudName := fs.String("cloud", "", "AzurePublicCloud, AzureChinaCloud or AzureUSGovernment (default: from the spec's vault names)")
	concurrency := fs.Int("concurrency", initagent.DefaultConcurrency, fmt.Sprintf("secrets fetched in parallel (1 to %d)", initagent.MaxConcurrency))
	dir := fs.String("dir", "", "where the agent writes the files (default: the spec's mountPath)")
	logFormat := fs.String("log-format", "json", "log format on stderr: json or text")
	termLog := fs.String("termination-log", "/dev/termination-log", "also write the problem lines to this file when it exists (kubectl describe pod shows it)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: kvinject agent [flags]\n\nReads %s and the AZURE_* variables, fetches the Key Vault secrets and writes all files or none.\n\nFlags:\n", spec.EnvSpec)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(io.err, "kvinject agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var handler slog.Handler
	switch *logFormat {
	case "json":
		handler = slog.NewJSONHandler(io.err, nil)
	case "text":
		handler = slog.NewTextHandler(io.err, nil)
	default:
		fmt.Fprintf(io.err, "kvinject agent: --log-format %q: want json or text\n", *logFormat)
		return 2
	}
	logger := logr.FromSlogHandler(handler)

	raw := io.getenv(spec.EnvSpec)
	if raw == "" {
		fmt.Fprintf(io.err, "error: %s is not set: the agent runs in the %s init container the webhook adds, which sets it\n", spec.EnvSpec, spec.AgentContainerName)
		return 2
	}
	s, err := spec.Decode([]byte(raw))
	if err != nil {
		fmt.Fprintf(io.err, "error: %v\n", err)
		return 2
	}
	var cloud spec.Cloud
	if *cloudName != "" {
		if cloud, err = spec.LookupCloud(*cloudName); err != nil {
			fmt.Fprintf(io.err, "kvinject agent: --cloud: %v\n", err)
			return 2
		}
	}
	agent, err := initagent.New(initagent.Options{
		Spec:        s,
		Env:         initagent.EnvFrom(io.getenv),
		Cloud:       cloud,
		Dir:         *dir,
		Timeout:     *timeout,
		Concurrency: *concurrency,
		Out:         io.out,
		Err:         io.err,
		Logger:      logger,
		Now:         time.Now,

		TerminationLog: *termLog,
	})
	if err != nil {
		fmt.Fprintf(io.err, "error: %v\n", err)
		return 2
	}
	if *check {
		if err := agent.Check(); err != nil {
			fmt.Fprintf(io.err, "error: %v\n", err)
			return 1
		}
		return 0
	}
	if err := agent.Run(ctx); err != nil {
		if !errors.Is(err, initagent.ErrFailed) {
			fmt.Fprintf(io.err, "error: %v\n", err)
		}
		return 1
	}
	return 0
}
