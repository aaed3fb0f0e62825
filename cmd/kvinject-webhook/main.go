// Command kvinject-webhook is kvinject's mutating admission webhook server,
// the same server as `kvinject webhook` in a binary of its own: it links
// only what serving admissions needs, so the pages its package initialisers
// touch are the server's, not those of the user commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvinject/kvinject/internal/webhookserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := webhookserver.Command(ctx, "kvinject-webhook", os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
