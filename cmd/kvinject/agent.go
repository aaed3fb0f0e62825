package main

import (
	"context"

	"github.com/kvinject/kvinject/initagent"
)

// runAgent is `kvinject agent`: the same command as the kvinject-agent
// binary the init container runs.
func runAgent(ctx context.Context, args []string, io stdio) int {
	return initagent.Main(ctx, "kvinject agent", args, initagent.Stdio{Out: io.out, Err: io.err, Getenv: io.getenv})
}
