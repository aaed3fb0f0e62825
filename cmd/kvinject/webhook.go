package main

import (
	"context"

	"github.com/kvinject/kvinject/internal/webhookserver"
)

// runWebhook is `kvinject webhook`: the admission webhook server, as the
// kvinject-webhook binary runs it.
func runWebhook(ctx context.Context, args []string, io stdio) int {
	return webhookserver.Command(ctx, "kvinject webhook", args, io.err)
}
