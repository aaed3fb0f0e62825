// Command child is the kvinject cache as the cache benchmark runs it: the
// server of `kvinject cache` (cacheserver.Serve: the controller-runtime
// manager's HTTPS server with certificate reloading, probes, TokenReviews
// through the API server named by -kubeconfig), listening on 127.0.0.1
// only, without metrics. `kvinject cache` itself listens on every address,
// which a benchmark on a shared machine must not do; everything else is
// the production code path, flags and defaults included.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kvinject/kvinject/cacheserver"
)

func main() {
	o := cacheserver.DefaultServeOptions()
	o.Host = "127.0.0.1"
	o.MetricsAddr = "0"
	// Its own flag set: controller-runtime registers -kubeconfig on the
	// default one. The flags are kvinject cache's own.
	fs := flag.NewFlagSet("kvinject cache (benchmark child)", flag.ExitOnError)
	o.AddFlags(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server that reviews tokens")
	_ = fs.Parse(os.Args[1:])
	o.Complete()
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "cache child: %v\n", err)
		os.Exit(2)
	}
	// The logger of `kvinject cache` (cmd/kvinject serverLogger).
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctrl.SetLogger(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logr.NewContext(ctx, log)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Error(err, "cannot start")
		os.Exit(1)
	}
	if err := cacheserver.Serve(ctx, o, cfg); err != nil {
		log.Error(err, "cache stopped")
		os.Exit(1)
	}
}
