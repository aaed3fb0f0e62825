package webhookserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// CacheCAInterval is how often the webhook reads the cache's CA file
// again. The kubelet updates a mounted Secret or ConfigMap within about a
// minute; ten seconds more is nothing beside that.
const CacheCAInterval = 10 * time.Second

// ReadCacheCA reads a cache CA bundle file (--cache-ca-file), at most one
// byte more than spec.MaxCacheCABytes: enough for the parse to say it is
// too large.
func ReadCacheCA(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, spec.MaxCacheCABytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// watchCacheCA reads the cache CA file every interval until ctx ends and,
// when its content changed and is a valid bundle, stores a copy of the
// options that trusts it (webhook.Options.WithCacheCA). A file that cannot
// be read or holds no valid bundle is logged, once for each content or
// error, and the last good CA stays. It logs with ctx's logger.
func watchCacheCA(ctx context.Context, path string, interval time.Duration, options *atomic.Pointer[webhook.Options]) {
	log := logr.FromContextOrDiscard(ctx).WithValues("file", path)
	// What the last read found: the content, or the error it ended in.
	seen, seenErr := options.Load().CacheCA, ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := ReadCacheCA(path)
		if err != nil {
			if err.Error() != seenErr {
				log.Error(err, "cannot read the cache CA file: keeping the last good CA")
			}
			seenErr = err.Error()
			continue
		}
		if seenErr != "" {
			log.Info("the cache CA file can be read again")
		}
		seenErr = ""
		if bytes.Equal(b, seen) {
			continue
		}
		seen = b
		err = updateOptions(options, func(o *webhook.Options) (*webhook.Options, error) { return o.WithCacheCA(b) })
		if err != nil {
			log.Error(err, "the cache CA file changed to a bundle that is not valid: keeping the last good CA")
			continue
		}
		log.Info("the cache CA file changed: pods admitted from now on trust the new bundle")
	}
}
