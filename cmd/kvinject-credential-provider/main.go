// Command kvinject-credential-provider is the kubelet's image credential
// provider for kvinject: the kubelet runs it from its
// --image-credential-provider-bin-dir with the pod's ServiceAccount token
// on stdin, and it answers with the registry credential held in Key Vault.
// Like the agent it is built apart from the kvinject command, so that it
// carries none of the Kubernetes packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvinject/kvinject/credprovider"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := credprovider.Main(ctx, "kvinject-credential-provider", os.Args[1:],
		credprovider.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
