package webhook

import (
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/suggest"
)

// suggestAnnotation names the valid annotation closest to an unknown one, so that
// `kvinject.io/secrets-db` is answered with `kvinject.io/secret-db`.
func suggestAnnotation(unknown string) string {
	var candidates []string
	for _, a := range singleAnnotations {
		if a != spec.AnnotationStatus && a != spec.AnnotationStatusEnv { // set by the webhook, never a useful suggestion
			candidates = append(candidates, a)
		}
	}
	// A per-file annotation with a mistyped prefix keeps its file name.
	if i := strings.IndexByte(strings.TrimPrefix(unknown, spec.Prefix), '-'); i >= 0 {
		file := strings.TrimPrefix(unknown, spec.Prefix)[i+1:]
		for _, p := range fileAnnotationPrefixes {
			candidates = append(candidates, p+file)
		}
	}
	// Only suggest what is plausibly a typo.
	best, ok := suggest.Closest(unknown, candidates, max(3, len(strings.TrimPrefix(unknown, spec.Prefix))/3))
	if !ok {
		return ": kvinject.io annotations are vault, client-id, tenant-id, token-expiration, mount-path, containers, refresh, cache, on-change, secret-<file>, template-<file>, perms-<file>, env-<VAR> and entrypoint-<container>"
	}
	return ", did you mean " + best + "?"
}
