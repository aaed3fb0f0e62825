package webhook

import (
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
)

// suggest names the valid annotation closest to an unknown one, so that
// `kvinject.io/secrets-db` is answered with `kvinject.io/secret-db`.
func suggest(unknown string) string {
	candidates := append([]string(nil), singleAnnotations...)
	// A per-file annotation with a mistyped prefix keeps its file name.
	if i := strings.IndexByte(strings.TrimPrefix(unknown, spec.Prefix), '-'); i >= 0 {
		file := strings.TrimPrefix(unknown, spec.Prefix)[i+1:]
		for _, p := range fileAnnotationPrefixes {
			candidates = append(candidates, p+file)
		}
	}
	best, bestDist := "", len(unknown)
	for _, c := range candidates {
		if c == spec.AnnotationStatus {
			continue // set by the webhook, never a useful suggestion
		}
		if d := editDistance(unknown, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	// Only suggest what is plausibly a typo.
	if best == "" || bestDist > max(3, len(strings.TrimPrefix(unknown, spec.Prefix))/3) {
		return ": kvinject.io annotations are vault, client-id, tenant-id, token-expiration, mount-path, containers, secret-<file>, template-<file> and perms-<file>"
	}
	return ", did you mean " + best + "?"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
