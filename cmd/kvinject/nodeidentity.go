package main

import (
	"context"
	"fmt"
)

// runNodeIdentity is `kvinject node-identity`, the one container of the
// kvinject-node-identity DaemonSet: it does nothing but live, so that the
// kubelet keeps the pod's projected token (the node identity's, for
// kvinject-credential-provider's node mode) on the node and renews it. It
// reads no file, opens no connection and exits on SIGTERM.
func runNodeIdentity(ctx context.Context, args []string, io stdio) int {
	if len(args) > 0 {
		fmt.Fprintf(io.err, "Usage: kvinject node-identity\n\nHolds the node identity's projected token on this node for kvinject-credential-provider's\nnode mode (the kubelet renews it while the pod runs). Exits on SIGTERM.\n")
		if args[0] == "-h" || args[0] == "--help" {
			return 0
		}
		return 2
	}
	fmt.Fprintln(io.err, "kvinject node-identity: holding the node identity's token for kvinject-credential-provider; exits on SIGTERM")
	<-ctx.Done()
	return 0
}
