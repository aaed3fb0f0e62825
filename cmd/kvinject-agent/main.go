// Command kvinject-agent is the init container kvinject's webhook adds to a
// pod: it exchanges the pod's projected token for an Entra ID access token,
// fetches the pod's Key Vault secrets and writes all files or none. It is
// built apart from the kvinject command so that it carries none of the
// Kubernetes client packages: a small binary, a small resident set.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvinject/kvinject/initagent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := initagent.Main(ctx, "kvinject-agent", os.Args[1:], initagent.Stdio{Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
