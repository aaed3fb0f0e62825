package main

import (
	"context"

	"github.com/kvinject/kvinject/cacheserver"
)

// runCache is `kvinject cache`: the cluster cache's server, as the
// kvinject-cache binary runs it.
func runCache(ctx context.Context, args []string, io stdio) int {
	return cacheserver.Command(ctx, "kvinject cache", args, io.err)
}
