package hygiene

import (
	"strings"
	"testing"
)

// serverBans are what the deployed servers' own binaries never link: the
// user commands' bodies (their package initialisers would run, and their
// pages be touched, in every replica) and k8s.io/apiserver (the metrics
// filter asks the API server's review APIs through client-go instead).
func serverBans(dep string) bool {
	for _, p := range []string{"/internal/entrypoint", "/internal/esoconvert", "/internal/azemu", "/internal/preview", "/initagent", "/credprovider"} {
		if dep == module+p || strings.HasPrefix(dep, module+p+"/") {
			return true
		}
	}
	return strings.HasPrefix(dep, "k8s.io/apiserver/") || strings.HasPrefix(dep, "github.com/google/go-containerregistry/")
}

// TestServerBinariesLinkWhatTheyServe keeps the webhook's and the cache's
// binaries small in memory: docs/benchmarks.md, the resident set per binary.
func TestServerBinariesLinkWhatTheyServe(t *testing.T) {
	pkgs := modulePackages(t)
	for _, bin := range []string{"cmd/kvinject-webhook", "cmd/kvinject-cache"} {
		p, ok := pkgs[bin]
		if !ok {
			t.Errorf("%s is not a package", bin)
			continue
		}
		for _, d := range p.Deps {
			if serverBans(d) {
				t.Errorf("%s links %s: keep user commands and k8s.io/apiserver out of the servers' binaries", bin, d)
			}
		}
	}
	if !serverBans("k8s.io/apiserver/pkg/authentication/user") || serverBans("k8s.io/client-go/rest") || !serverBans(module+"/internal/azemu") {
		t.Error("serverBans does not say what it means")
	}
}
