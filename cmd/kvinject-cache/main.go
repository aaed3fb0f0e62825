// Command kvinject-cache is kvinject's cluster cache server, the same
// server as `kvinject cache` in a binary of its own: it links only what
// the cache needs (Key Vault reads, TokenReviews, serving).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvinject/kvinject/cacheserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cacheserver.Command(ctx, "kvinject-cache", os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
