package webhook

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/suggest"
)

// resourceSpellings are the resource annotations as the Vault Agent
// Injector orders their words (vault.hashicorp.com/agent-requests-cpu,
// agent-limits-mem), each with kvinject's name for it, so that a manifest
// moved over is answered with the name to use.
var resourceSpellings = func() map[string]string {
	m := map[string]string{}
	for _, prefix := range []string{spec.AnnotationAgentResourcePrefix, spec.AnnotationRefreshResourcePrefix} {
		for _, r := range resourceSettings {
			kind := "requests-"
			if r.limit {
				kind = "limits-"
			}
			m[prefix+kind+string(r.resource)] = prefix + r.suffix()
			if r.resource == corev1.ResourceMemory {
				m[prefix+kind+"mem"] = prefix + r.suffix()
			}
		}
	}
	return m
}()

// suggestionCandidates are the names an unknown annotation may be a typo
// of, whatever it is: the single annotations a pod sets, the resource
// annotations and their other spellings, in a fixed order.
var suggestionCandidates = func() []string {
	var candidates []string
	for _, a := range singleAnnotations {
		if a != spec.AnnotationStatus && a != spec.AnnotationStatusEnv { // set by the webhook, never a useful suggestion
			candidates = append(candidates, a)
		}
	}
	candidates = append(candidates, resourceAnnotations...)
	return append(candidates, sortedKeys(resourceSpellings)...)
}()

// maxSuggestedKey is the longest annotation key under kvinject.io/ the API
// server stores (a name of at most 63 characters). A longer one, which
// admission sees before validation, is no typo of a valid key, and the edit
// distance to a per-file candidate as long as it grows with its square.
const maxSuggestedKey = len(spec.Prefix) + 63

const annotationList = ": kvinject.io annotations are vault, client-id, tenant-id, token-expiration, mount-path, containers, refresh, cache, on-change, secret-<file>, template-<file>, perms-<file>, env-<VAR>, entrypoint-<container>, agent-<cpu|memory>-<request|limit> and refresh-<cpu|memory>-<request|limit>"

// suggestAnnotation names the valid annotation closest to an unknown one, so that
// `kvinject.io/secrets-db` is answered with `kvinject.io/secret-db`.
func suggestAnnotation(unknown string) string {
	if len(unknown) > maxSuggestedKey {
		return annotationList
	}
	candidates := suggestionCandidates
	// A per-file annotation with a mistyped prefix keeps its file name.
	if i := strings.IndexByte(strings.TrimPrefix(unknown, spec.Prefix), '-'); i >= 0 {
		file := strings.TrimPrefix(unknown, spec.Prefix)[i+1:]
		perFile := make([]string, len(fileAnnotationPrefixes))
		for j, p := range fileAnnotationPrefixes {
			perFile[j] = p + file
		}
		candidates = slices.Concat(candidates, perFile)
	}
	// Only suggest what is plausibly a typo.
	best, ok := suggest.Closest(unknown, candidates, max(3, len(strings.TrimPrefix(unknown, spec.Prefix))/3))
	if !ok {
		return annotationList
	}
	if name, ok := resourceSpellings[best]; ok {
		best = name
	}
	return ", did you mean " + best + "?"
}
