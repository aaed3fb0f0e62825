package webhook

import (
	"maps"
	"sync"

	"github.com/kvinject/kvinject/internal/spec"
)

// Bounds of the template cache: the pods of one workload carry the same
// templates, so a few hundred entries serve a cluster's rollouts, and a
// flood of distinct templates costs at most this much memory.
const (
	templateCacheEntries = 512
	templateCacheBytes   = 4 << 20
)

// templateCache remembers what spec.ParseTemplate said of a template, so
// that the pods of a rollout, which carry the same template, parse it once.
// A parse depends only on the text, the pod's vault and the cloud.
type templateCache struct {
	mu      sync.Mutex
	entries map[templateKey]templateResult
	bytes   int
}

type templateKey struct{ text, vault, cloud string }

type templateResult struct {
	refs map[string]spec.Ref
	err  error
}

func newTemplateCache() *templateCache {
	return &templateCache{entries: map[templateKey]templateResult{}}
}

// parse is spec.ParseTemplate, cached. The refs are the caller's own copy.
func (c *templateCache) parse(text, vault string, cloud spec.Cloud) (map[string]spec.Ref, error) {
	key := templateKey{text, vault, cloud.Name}
	c.mu.Lock()
	r, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		r.refs, r.err = spec.ParseTemplate(text, vault, cloud)
		c.mu.Lock()
		size := len(text) + len(vault)
		if len(c.entries) >= templateCacheEntries || c.bytes+size > templateCacheBytes {
			// Start over rather than track recency: cheap, and bounded.
			clear(c.entries)
			c.bytes = 0
		}
		c.entries[key] = r
		c.bytes += size
		c.mu.Unlock()
	}
	return maps.Clone(r.refs), r.err
}

// parseTemplate parses a pod's template through the cache of validated
// Options.
func (o *Options) parseTemplate(text, vault string) (map[string]spec.Ref, error) {
	if o.templates == nil {
		return spec.ParseTemplate(text, vault, o.Cloud)
	}
	return o.templates.parse(text, vault, o.Cloud)
}
