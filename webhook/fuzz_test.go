package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/spec"
)

// FuzzMutate feeds arbitrary annotations through the whole mutation: it must
// never panic, a denied pod must stay untouched, an admitted pod must hold
// every injected part, and mutating it again must change nothing.
func FuzzMutate(f *testing.F) {
	f.Add("secret-username", "app-pgsql#username", "perms-username", "0440", "containers", "app")
	f.Add("template-conf", `u={{ secret "db#a.0" | quote }}`, "mount-path", "/etc/x", "vault", "https://kv1.vault.azure.net")
	f.Add("secret-a", "https://kv1.vault.azure.net/secrets/x/0123456789abcdef0123456789abcdef#p", "token-expiration", "86400", "client-id", testClientID)
	f.Add("secret-..", "x", "secrets-a", "b", "containers", "setup,app")
	f.Add("secret-db", "app-pgsql#password", "cache", "true", "refresh", "1h")
	f.Add("env-PASSWORD", "app-pgsql#password", "cache", "required", "vault", "homelab-kv")
	f.Add("secret-db", "app-pgsql", "cache", "false", "cache", "yes")
	f.Add("env-PASSWORDS", "app-pgsql#password", "entrypoint-app", `["/app","$(X)"]`, "vault", "homelab-kv")
	f.Add("env-PASSWORDS", "app-pgsql#password", "entrypoint-app", `["/app",1]`, "containers", "setup")
	f.Add("refresh", "1m", "on-change", "restart", "secret-db", "app-pgsql")
	f.Add("refresh", "1m", "on-change", "signal:SIGHUP", "env-PASSWORD", "app-pgsql")
	f.Add("refresh", "1m", "on-change", "signal:hup", "containers", "setup")
	f.Add("secret-db", "app-pgsql", "agent-cpu-request", "100m", "refresh-memory-limit", "128Mi")
	f.Add("secret-db", "app-pgsql", "agent-memory-limit", "2Gi", "agent-memory-request", "1.5Gi")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		ann := map[string]string{"kvinject.io/" + k1: v1, "kvinject.io/" + k2: v2, "kvinject.io/" + k3: v3}
		pod := podWith(ann)
		before := pod.DeepCopy()
		o := testOptions(t)
		if len(k1)%2 == 1 { // both env deliveries
			o.EnvDelivery = spec.DeliveryExec
		}
		if len(k2)%2 == 1 { // resource annotations allowed, or not
			o.MaxInjectedCPU, o.MaxInjectedMemory = resource.MustParse("1"), resource.MustParse("1Gi")
		}
		sa := testSA("ns", "app")
		err := Mutate(pod, sa, o)
		if err != nil {
			var d *Denial
			if !errors.As(err, &d) || len(d.Problems) == 0 {
				t.Fatalf("error is not a denial with problems: %v", err)
			}
			if diff := cmp.Diff(before, pod); diff != "" {
				t.Fatalf("denied pod changed:\n%s", diff)
			}
			for _, k := range []string{"template-", "secret-"} {
				for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {k3, v3}} {
					if strings.HasPrefix(kv[0], "template-") && k == "template-" && len(kv[1]) > 12 &&
						!strings.Contains(kv[0], kv[1]) && strings.Contains(err.Error(), kv[1]) {
						t.Fatalf("denial quotes a template's text")
					}
				}
			}
			return
		}
		checkInjected(t, pod)
		checkPatch(t, before, sa, o)
		again := pod.DeepCopy()
		if err := Mutate(again, sa, o); err != nil {
			t.Fatalf("second mutation: %v", err)
		}
		if diff := cmp.Diff(pod, again); diff != "" {
			t.Fatalf("second mutation changed the pod:\n%s", diff)
		}
	})
}
