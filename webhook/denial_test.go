package webhook

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
)

func podWith(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "p", Namespace: "ns",
			Labels:      map[string]string{spec.LabelInject: "true"},
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "app",
			InitContainers:     []corev1.Container{{Name: "setup", Image: "i"}},
			Containers: []corev1.Container{{
				Name: "app", Image: "i",
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}},
			}},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// TestDenials checks every denial's exact wording: each names the
// annotation and says what is allowed.
func TestDenials(t *testing.T) {
	const secretText = "louiselane-literal"
	tests := []struct {
		name string
		ann  map[string]string
		sa   map[string]string // nil: the default test ServiceAccount
		opts func(*Options)
		want []string
	}{{
		name: "unknown annotation suggests the closest",
		ann:  map[string]string{"kvinject.io/secrets-password": "db#password", "kvinject.io/secret-x": "db"},
		want: []string{"kvinject.io/secrets-password: unknown annotation, did you mean kvinject.io/secret-password?"},
	}, {
		name: "resources without the webhook's bounds",
		ann:  map[string]string{"kvinject.io/agent-cpu-request": "100m", "kvinject.io/secret-x": "db"},
		want: []string{"kvinject.io/agent-cpu-request: the webhook allows no per-pod cpu (its --max-injected-cpu is not set): remove the annotation, or ask the cluster's admins"},
	}, {
		name: "resources above the webhook's bounds, or not quantities",
		ann: map[string]string{"kvinject.io/refresh-memory-limit": "1Gi", "kvinject.io/agent-cpu-limit": "lots", "kvinject.io/agent-memory-request": "-1Mi",
			"kvinject.io/refresh": "15m", "kvinject.io/secret-x": "db"},
		opts: func(o *Options) {
			o.MaxInjectedCPU, o.MaxInjectedMemory = resource.MustParse("2"), resource.MustParse("256Mi")
		},
		want: []string{
			`kvinject.io/agent-cpu-limit: "lots" is not a positive quantity: use one like 100m (CPU) or 64Mi (memory)`,
			`kvinject.io/agent-memory-request: "-1Mi" is not a positive quantity: use one like 100m (CPU) or 64Mi (memory)`,
			`kvinject.io/refresh-memory-limit: "1Gi" is above the most the webhook allows, 256Mi (--max-injected-memory)`,
		},
	}, {
		name: "a resource request above the limit",
		ann:  map[string]string{"kvinject.io/agent-cpu-request": "1", "kvinject.io/secret-x": "db"},
		opts: func(o *Options) { o.MaxInjectedCPU = resource.MustParse("2") },
		want: []string{"kvinject.io/agent-cpu-request: 1 is above the cpu limit 500m: set kvinject.io/agent-cpu-limit too"},
	}, {
		name: "a resource limit below the request",
		ann:  map[string]string{"kvinject.io/agent-memory-limit": "16Mi", "kvinject.io/secret-x": "db"},
		opts: func(o *Options) { o.MaxInjectedMemory = resource.MustParse("1Gi") },
		want: []string{"kvinject.io/agent-memory-limit: 16Mi is below the memory request 32Mi: set kvinject.io/agent-memory-request too"},
	}, {
		name: "a resource request above the limit, both set",
		ann:  map[string]string{"kvinject.io/refresh-cpu-request": "200m", "kvinject.io/refresh-cpu-limit": "100m", "kvinject.io/refresh": "15m", "kvinject.io/secret-x": "db"},
		opts: func(o *Options) { o.MaxInjectedCPU = resource.MustParse("1") },
		want: []string{"kvinject.io/refresh-cpu-request: 200m is above kvinject.io/refresh-cpu-limit, 100m"},
	}, {
		name: "unknown annotation, typo of a single one",
		ann:  map[string]string{"kvinject.io/valut": "homelab-kv", "kvinject.io/secret-x": "db"},
		want: []string{"kvinject.io/valut: unknown annotation, did you mean kvinject.io/vault?"},
	}, {
		name: "unknown annotation far from all",
		ann:  map[string]string{"kvinject.io/rotation-interval": "1h", "kvinject.io/secret-x": "db"},
		want: []string{"kvinject.io/rotation-interval: unknown annotation: kvinject.io annotations are vault, client-id, tenant-id, token-expiration, mount-path, containers, refresh, cache, on-change, secret-<file>, template-<file>, perms-<file>, env-<VAR>, entrypoint-<container>, agent-<cpu|memory>-<request|limit> and refresh-<cpu|memory>-<request|limit>"},
	}, {
		name: "unknown annotation, typo of a resource one",
		ann:  map[string]string{"kvinject.io/agent-cpu-requests": "100m", "kvinject.io/refresh-memroy-limit": "64Mi", "kvinject.io/secret-x": "db"},
		want: []string{
			"kvinject.io/agent-cpu-requests: unknown annotation, did you mean kvinject.io/agent-cpu-request?",
			"kvinject.io/refresh-memroy-limit: unknown annotation, did you mean kvinject.io/refresh-memory-limit?",
		},
	}, {
		name: "unknown annotation, a resource one as the Vault Agent Injector spells it",
		ann:  map[string]string{"kvinject.io/agent-requests-cpu": "100m", "kvinject.io/refresh-limits-mem": "64Mi", "kvinject.io/secret-x": "db"},
		want: []string{
			"kvinject.io/agent-requests-cpu: unknown annotation, did you mean kvinject.io/agent-cpu-request?",
			"kvinject.io/refresh-limits-mem: unknown annotation, did you mean kvinject.io/refresh-memory-limit?",
		},
	}, {
		name: "unknown annotation, typo of the cache's",
		ann:  map[string]string{"kvinject.io/cahce": "true", "kvinject.io/secret-x": "db"},
		want: []string{"kvinject.io/cahce: unknown annotation, did you mean kvinject.io/cache?"},
	}, {
		name: "empty file name",
		ann:  map[string]string{"kvinject.io/secret-": "db"},
		want: []string{"kvinject.io/secret-: file name is empty: use 1-50 characters of letters, digits, '.', '_' and '-'", "no files: add kvinject.io/secret-<file>: <secret>, kvinject.io/template-<file>: <template> or kvinject.io/env-<VAR>: <secret>"},
	}, {
		name: "file name too long",
		ann:  map[string]string{"kvinject.io/secret-" + strings.Repeat("a", 51): "db"},
		want: []string{"kvinject.io/secret-" + strings.Repeat("a", 51) + ": file name \"" + strings.Repeat("a", 51) + "\" is 51 characters: at most 50", "no files: add kvinject.io/secret-<file>: <secret>, kvinject.io/template-<file>: <template> or kvinject.io/env-<VAR>: <secret>"},
	}, {
		name: "file name dot dot",
		ann:  map[string]string{"kvinject.io/secret-..": "db", "kvinject.io/secret-ok": "db"},
		want: []string{`kvinject.io/secret-..: file name ".." is not allowed`},
	}, {
		name: "file name dot",
		ann:  map[string]string{"kvinject.io/template-.": `{{ secret "db" }}`, "kvinject.io/secret-ok": "db"},
		want: []string{`kvinject.io/template-.: file name "." is not allowed`},
	}, {
		name: "file name with slash",
		ann:  map[string]string{"kvinject.io/secret-../etc/passwd": "db", "kvinject.io/secret-ok": "db"},
		want: []string{`kvinject.io/secret-../etc/passwd: file name "../etc/passwd" has "/": use letters, digits, '.', '_' and '-' only`},
	}, {
		name: "secret and template for one file",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/template-db": `{{ secret "db" }}`},
		want: []string{"kvinject.io/secret-db and kvinject.io/template-db: a file has a secret or a template, not both"},
	}, {
		name: "ref does not parse",
		ann:  map[string]string{"kvinject.io/secret-db": "app_pgsql#username"},
		want: []string{`kvinject.io/secret-db: reference "app_pgsql#username": secret name "app_pgsql" is not valid: 1-127 letters, digits and hyphens`},
	}, {
		name: "ref with a bad version",
		ann:  map[string]string{"kvinject.io/secret-db": "app-pgsql/latest"},
		want: []string{`kvinject.io/secret-db: reference "app-pgsql/latest": secret version "latest" is not valid: 32 hexadecimal digits`},
	}, {
		name: "ref with an empty path key",
		ann:  map[string]string{"kvinject.io/secret-db": "app-pgsql#db..password"},
		want: []string{`kvinject.io/secret-db: property path "db..password" has an empty key: separate keys with single dots, like db.password`},
	}, {
		name: "ref URL of another cloud",
		ann:  map[string]string{"kvinject.io/secret-db": "https://kv1.vault.azure.cn/secrets/db"},
		want: []string{`kvinject.io/secret-db: reference "https://kv1.vault.azure.cn/secrets/db": vault "https://kv1.vault.azure.cn" is not a Key Vault host: want https://NAME.vault.azure.net`},
	}, {
		name: "template does not parse, text not echoed",
		ann:  map[string]string{"kvinject.io/template-conf": "password=" + secretText + "\n{{ secret \"db\" }\n"},
		want: []string{"kvinject.io/template-conf: template line 2: does not parse"},
	}, {
		name: "template calls an unknown function",
		ann:  map[string]string{"kvinject.io/template-conf": secretText + "\n  {{ secret \"db\" | toYaml }}"},
		want: []string{`kvinject.io/template-conf: template line 2, column 20: unknown function "toYaml": use one of and, b64dec, b64enc, call, eq, ge, gt, html, index, js, le, len, lower, lt, ne, not, or, print, printf, println, quote, secret, slice, trim, upper, urlquery`},
	}, {
		name: "template ranges over a number",
		ann:  map[string]string{"kvinject.io/template-conf": `{{ range 2000000000 }}{{ end }}{{ secret "db" }}`},
		want: []string{"kvinject.io/template-conf: template line 1, column 10: range is not allowed: a template has no list to iterate (its data is empty); write the lines out"},
	}, {
		name: "template calls itself",
		ann:  map[string]string{"kvinject.io/template-conf": `{{ define "r" }}{{ template "r" }}{{ end }}{{ template "r" }}{{ secret "db" }}`},
		want: []string{`kvinject.io/template-conf: template line 1, column 29: template "r" is called again while it runs: recursion is not allowed`},
	}, {
		name: "env name not a C identifier",
		ann:  map[string]string{"kvinject.io/env-1PASSWORD": "db#password", "kvinject.io/env-DB-USER": "db#username"},
		want: []string{
			`kvinject.io/env-1PASSWORD: variable name "1PASSWORD" is not a C identifier: 1-128 letters, digits and '_', not starting with a digit`,
			`kvinject.io/env-DB-USER: variable name "DB-USER" is not a C identifier: 1-128 letters, digits and '_', not starting with a digit`,
			"no files: add kvinject.io/secret-<file>: <secret>, kvinject.io/template-<file>: <template> or kvinject.io/env-<VAR>: <secret>",
		},
	}, {
		name: "env ref does not parse",
		ann:  map[string]string{"kvinject.io/env-PASSWORD": "db#"},
		want: []string{`kvinject.io/env-PASSWORD: property path "" must be 1-256 characters, like username or db.hosts.0`},
	}, {
		name: "env file name taken by a file",
		ann:  map[string]string{"kvinject.io/secret-.kvinject-env": "db"},
		want: []string{`kvinject.io/secret-.kvinject-env: file name ".kvinject-env" is reserved for the environment variables of kvinject.io/env-VAR annotations`, "no files: add kvinject.io/secret-<file>: <secret>, kvinject.io/template-<file>: <template> or kvinject.io/env-<VAR>: <secret>"},
	}, {
		name: "refresh not a duration",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/refresh": "hourly"},
		want: []string{`kvinject.io/refresh: "hourly" is not a duration: use one like 15m or 1h`},
	}, {
		name: "refresh too often",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/refresh": "30s"},
		want: []string{`kvinject.io/refresh: "30s" is shorter than the minimum of 1m0s`},
	}, {
		name: "template reads no secret",
		ann:  map[string]string{"kvinject.io/template-conf": secretText},
		want: []string{`kvinject.io/template-conf: template line 1: reads no secret: call {{ secret "name#path" }} at least once`},
	}, {
		name: "template secret without a literal",
		ann:  map[string]string{"kvinject.io/template-conf": `{{ secret .name }}`},
		want: []string{`kvinject.io/template-conf: template line 1, column 4: secret takes one quoted reference: {{ secret "name#path" }}`},
	}, {
		name: "cache not one of its values",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/cache": "True"},
		want: []string{`kvinject.io/cache: "True" must be "true", "required" or "false"`},
	}, {
		name: "cache value long, quoted bounded",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/cache": strings.Repeat("y", 100)},
		want: []string{`kvinject.io/cache: "` + strings.Repeat("y", 80) + `"… (100 bytes) must be "true", "required" or "false"`},
	}, {
		name: "cache required where the cluster runs none",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/cache": "required"},
		opts: func(o *Options) { o.CacheURL, o.CacheCA = "", nil },
		want: []string{`kvinject.io/cache: "required" needs the cluster cache, and this cluster runs none (the webhook has no --cache-url): use "true", which reads from Azure directly where no cache runs, or remove the annotation`},
	}, {
		name: "vault not https",
		ann:  map[string]string{"kvinject.io/vault": "http://homelab-kv.vault.azure.net", "kvinject.io/secret-db": "db"},
		want: []string{`kvinject.io/vault: vault "http://homelab-kv.vault.azure.net" must be an https:// URL or a vault name`},
	}, {
		name: "vault not a vault host",
		ann:  map[string]string{"kvinject.io/vault": "https://evil.example.com", "kvinject.io/secret-db": "db"},
		want: []string{`kvinject.io/vault: vault "https://evil.example.com" is not a Key Vault host: want https://NAME.vault.azure.net`},
	}, {
		name: "vault name invalid",
		ann:  map[string]string{"kvinject.io/vault": "kv", "kvinject.io/secret-db": "db"},
		want: []string{`kvinject.io/vault: vault name "kv" is not valid: 3-24 letters, digits and hyphens, starting with a letter`},
	}, {
		name: "no vault anywhere",
		ann:  map[string]string{"kvinject.io/secret-db": "db"},
		opts: func(o *Options) { o.DefaultVault = "" },
		want: []string{"kvinject.io/vault: no vault: set it to a vault name or https:// URL (the webhook has no --default-vault)"},
	}, {
		name: "perms not octal",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/perms-db": "r--r-----"},
		want: []string{`kvinject.io/perms-db: mode "r--r-----" is not an octal mode like 0440`},
	}, {
		name: "perms give write",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/perms-db": "0640"},
		want: []string{`kvinject.io/perms-db: mode "0640" grants more than read: use only 4s and 0s, e.g. 0400, 0440, 0444`},
	}, {
		name: "perms give execute",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/perms-db": "0555"},
		want: []string{`kvinject.io/perms-db: mode "0555" grants more than read: use only 4s and 0s, e.g. 0400, 0440, 0444`},
	}, {
		name: "perms for no file",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/perms-dv": "0400"},
		want: []string{`kvinject.io/perms-dv: no file "dv": add kvinject.io/secret-dv or kvinject.io/template-dv`},
	}, {
		name: "no client id",
		ann:  map[string]string{"kvinject.io/secret-db": "db"},
		sa:   map[string]string{},
		want: []string{"no client id: set the pod annotation kvinject.io/client-id or the annotation azure.workload.identity/client-id on ServiceAccount ns/app"},
	}, {
		name: "client id not a GUID on the ServiceAccount",
		ann:  map[string]string{"kvinject.io/secret-db": "db"},
		sa:   map[string]string{spec.SAAnnotationClientID: "my-app"},
		want: []string{`ServiceAccount ns/app annotation azure.workload.identity/client-id: "my-app" is not a GUID (8-4-4-4-12 hexadecimal digits)`},
	}, {
		name: "no tenant id",
		ann:  map[string]string{"kvinject.io/secret-db": "db"},
		opts: func(o *Options) { o.TenantID = "" },
		want: []string{"no tenant id: set the pod annotation kvinject.io/tenant-id or the annotation azure.workload.identity/tenant-id on ServiceAccount ns/app (the webhook has no --tenant-id)"},
	}, {
		name: "token expiration too short",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/token-expiration": "600"},
		want: []string{`kvinject.io/token-expiration: "600" must be a number of seconds from 3600 to 86400`},
	}, {
		name: "token expiration not a number",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/token-expiration": "1h"},
		want: []string{`kvinject.io/token-expiration: "1h" must be a number of seconds from 3600 to 86400`},
	}, {
		name: "target container does not exist",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/containers": "app,sidecar"},
		want: []string{`kvinject.io/containers: no container "sidecar" in this pod (containers: app, setup)`},
	}, {
		name: "mount path relative",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "secrets"},
		want: []string{`kvinject.io/mount-path: "secrets" must be a clean absolute path other than /, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path not UTF-8",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/etc/\x80app"},
		want: []string{`kvinject.io/mount-path: "/etc/\x80app" must be printable UTF-8, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path with a control character",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/etc/a\tpp"},
		want: []string{`kvinject.io/mount-path: "/etc/a\tpp" must be printable UTF-8, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path above the token's",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/var/run/secrets"},
		want: []string{`kvinject.io/mount-path: "/var/run/secrets" overlaps /var/run/secrets/kvinject.io/token, where kvinject mounts the agent's token: choose a path outside it, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path on the API token's",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/var/run/secrets/kubernetes.io/serviceaccount"},
		want: []string{`kvinject.io/mount-path: "/var/run/secrets/kubernetes.io/serviceaccount" overlaps /var/run/secrets/kubernetes.io/serviceaccount, where kvinject mounts the agent's token: choose a path outside it, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path below the token's",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/var/run/secrets/kvinject.io/token/files"},
		want: []string{`kvinject.io/mount-path: "/var/run/secrets/kvinject.io/token/files" overlaps /var/run/secrets/kvinject.io/token, where kvinject mounts the agent's token: choose a path outside it, like /var/run/secrets/kvinject`},
	}, {
		name: "mount path collides",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/mount-path": "/etc/app"},
		want: []string{`kvinject.io/mount-path: "/etc/app" collides with volume "config" already mounted there in container "app": choose another path`},
	}, {
		name: "no files",
		ann:  map[string]string{"kvinject.io/vault": "homelab-kv"},
		want: []string{"no files: add kvinject.io/secret-<file>: <secret>, kvinject.io/template-<file>: <template> or kvinject.io/env-<VAR>: <secret>"},
	}, {
		name: "several problems at once",
		ann:  map[string]string{"kvinject.io/secret-db": "db", "kvinject.io/perms-db": "0777", "kvinject.io/token-expiration": "0"},
		want: []string{
			`kvinject.io/perms-db: mode "0777" grants more than read: use only 4s and 0s, e.g. 0400, 0440, 0444`,
			`kvinject.io/token-expiration: "0" must be a number of seconds from 3600 to 86400`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t)
			if tt.opts != nil {
				tt.opts(o)
				o.Complete()
				if err := o.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			sa := testSA("ns", "app")
			if tt.sa != nil {
				sa.Annotations = tt.sa
			}
			pod := podWith(tt.ann)
			before := pod.DeepCopy()
			err := Mutate(pod, sa, o)
			var d *Denial
			if !errors.As(err, &d) {
				t.Fatalf("Mutate = %v, want a denial", err)
			}
			if diff := cmp.Diff(tt.want, d.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), secretText) {
				t.Errorf("denial echoes the template's text: %v", err)
			}
			if diff := cmp.Diff(before, pod); diff != "" {
				t.Errorf("a denied pod was changed (-before +after):\n%s", diff)
			}
		})
	}
}

// TestDeniedCollisions: what would only fail later is refused at admission.
func TestDeniedCollisions(t *testing.T) {
	t.Run("a container named like kvinject's refresh sidecar", func(t *testing.T) {
		pod := podWith(map[string]string{"kvinject.io/secret-x": "db"})
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: spec.RefreshContainerName, Image: "i"})
		d := denial(t, pod)
		want := []string{`container "kvinject-refresh": the name is kvinject's own init container's: rename the container`}
		if diff := cmp.Diff(want, d.Problems); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
	})
	t.Run("a container named like kvinject's agent", func(t *testing.T) {
		pod := podWith(map[string]string{"kvinject.io/secret-x": "db"})
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: spec.AgentContainerName, Image: "i"})
		err := Mutate(pod, testSA("ns", "app"), testOptions(t))
		var d *Denial
		if !errors.As(err, &d) {
			t.Fatalf("Mutate = %v, want a denial", err)
		}
		want := []string{`container "kvinject-agent": the name is kvinject's own init container's: rename the container`}
		if diff := cmp.Diff(want, d.Problems); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
	})
	for _, mode := range []string{"0000", "0040", "0044"} {
		t.Run("mode "+mode, func(t *testing.T) {
			err := Mutate(podWith(map[string]string{"kvinject.io/secret-x": "db", "kvinject.io/perms-x": mode}), testSA("ns", "app"), testOptions(t))
			var d *Denial
			if !errors.As(err, &d) {
				t.Fatalf("Mutate = %v, want a denial", err)
			}
			want := []string{`kvinject.io/perms-x: mode "` + mode + `" does not let the file's owner read it: use 0400, 0440 or 0444`}
			if diff := cmp.Diff(want, d.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// versionCase is an API server version and whether it denies the feature.
type versionCase struct {
	version string
	denied  bool
}

// checkVersionGate mutates a pod with ann on each version: admitted, or
// denied with exactly want(minor).
func checkVersionGate(t *testing.T, ann map[string]string, cases []versionCase, want func(minor string) []string, change ...func(*Options)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.version, func(t *testing.T) {
			o := testOptions(t)
			for _, c := range change {
				c(o)
			}
			if err := o.SetKubeVersion(tc.version); err != nil {
				t.Fatal(err)
			}
			err := Mutate(podWith(ann), testSA("ns", "app"), o)
			if !tc.denied {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var d *Denial
			if !errors.As(err, &d) {
				t.Fatalf("Mutate = %v, want a denial", err)
			}
			minor := strings.Split(strings.TrimPrefix(tc.version, "v"), ".")[1]
			if diff := cmp.Diff(want(minor), d.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRefreshNeedsSidecars: below Kubernetes 1.29 there are no native
// sidecars, so a refresh is denied, saying what to do instead.
func TestRefreshNeedsSidecars(t *testing.T) {
	checkVersionGate(t, map[string]string{"kvinject.io/secret-x": "db", "kvinject.io/refresh": "1h"},
		[]versionCase{{"1.28", true}, {"v1.28.15+k3s1", true}, {"1.29", false}, {"v1.33.5+abcdef", false}},
		func(minor string) []string {
			return []string{"kvinject.io/refresh: the refresh sidecar is a native sidecar, which needs Kubernetes 1.29 or newer, and this cluster runs 1." + minor + ": remove the annotation (the files are then written once, when the pod starts)"}
		})
	for _, bad := range []string{"", "2.0", "1.x", "latest", "1.12345"} {
		if _, err := KubeMinor(bad); err == nil {
			t.Errorf("KubeMinor(%q) accepted", bad)
		}
	}
}

// TestEnvNeedsEnvFiles: below Kubernetes 1.35 the kubelet does not read
// fileKeyRef, so with --env-delivery file-key-ref an env- annotation is
// denied, naming the version and the file alternative (auto takes the exec
// wrapper there).
func TestEnvNeedsEnvFiles(t *testing.T) {
	checkVersionGate(t, map[string]string{"kvinject.io/env-PASSWORD": "app-pgsql#password"},
		[]versionCase{{"v1.33.5+abcdef", true}, {"1.34", true}, {"1.35", false}, {"v1.37.2", false}},
		func(minor string) []string {
			return []string{"kvinject.io/env-PASSWORD: environment variables from a file (fileKeyRef) need Kubernetes 1.35 or newer, and this cluster runs 1." + minor +
				`: deliver the value as a file instead, kvinject.io/secret-<file>: "app-pgsql#password", and have the app read it`}
		}, func(o *Options) { o.EnvDelivery = spec.DeliveryFileKeyRef })
}

// TestAuthorityHost: the webhook takes exactly the authority hosts the
// agent takes (both parse with spec.ParseAuthorityHost), and injects the
// form the agent uses; before, "https://" alone was admitted and every
// injected pod's agent then refused to start.
func TestAuthorityHost(t *testing.T) {
	for _, tc := range []struct {
		host, want string // want "": refused
	}{
		{"", "https://login.microsoftonline.com/"},
		{"https://login.example.com", "https://login.example.com/"},
		{"https://login.example.com/", "https://login.example.com/"},
		{"https://", ""},
		{"https://user@login.example.com/", ""},
		{"https://login.example.com/?tenant=x", ""},
		{"http://login.example.com/", ""},
	} {
		o := testOptions(t)
		o.AuthorityHost = tc.host
		o.Complete()
		err := o.Validate()
		if (err == nil) != (tc.want != "") {
			t.Errorf("--authority-host %q: %v, want accepted=%v", tc.host, err, tc.want != "")
		}
		if err != nil {
			if !strings.Contains(err.Error(), "--authority-host") {
				t.Errorf("--authority-host %q: %v, want it named", tc.host, err)
			}
			continue
		}
		pod := podWith(map[string]string{"kvinject.io/secret-db": "app-pgsql"})
		if err := Mutate(pod, testSA("ns", "app"), o); err != nil {
			t.Fatal(err)
		}
		var got string
		for _, e := range pod.Spec.InitContainers[0].Env {
			if e.Name == spec.EnvAuthorityHost {
				got = e.Value
			}
		}
		if got != tc.want {
			t.Errorf("--authority-host %q: the agent gets %s=%q, want %q", tc.host, spec.EnvAuthorityHost, got, tc.want)
		}
	}
}

// TestProxyWithoutCredentials: a proxy URL with a user or password would be
// copied into every injected pod's spec.
func TestProxyWithoutCredentials(t *testing.T) {
	for _, tc := range []struct {
		proxy string
		ok    bool
	}{
		{"http://proxy.corp:3128", true},
		{"https://proxy.corp", true},
		{"http://user:s3cr3t-pw@proxy.corp:3128", false},
		{"http://user@proxy.corp:3128", false},
		{"proxy.corp:3128", false},
	} {
		o := DefaultOptions()
		o.AgentImage = "kvinject:test"
		o.AgentHTTPSProxy = tc.proxy
		o.Complete()
		err := o.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("--agent-https-proxy %q: %v, want ok=%v", tc.proxy, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}

// TestAgentUser: the agent always runs as a non-root uid it names, and an
// explicit mode is admitted only when the app can read the file it gives.
func TestAgentUser(t *testing.T) {
	const fallback = spec.AgentFallbackUser
	for _, tc := range []struct {
		name       string
		psc        *corev1.PodSecurityContext
		perms      string
		wantUID    int64
		wantGID    int64
		wantMode   string
		wantDenial string
	}{
		{name: "unknown user", wantUID: fallback, wantGID: fallback, wantMode: "0444"},
		{name: "root pod", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}, wantUID: fallback, wantGID: fallback, wantMode: "0444"},
		{name: "root pod with a group", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0), RunAsGroup: ptr.To[int64](0)},
			perms: "0440", wantUID: fallback, wantGID: 0, wantMode: "0440"},
		{name: "known user", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](3000)},
			wantUID: 1000, wantGID: 3000, wantMode: "0400"},
		{name: "fsGroup makes 0440 readable", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0), FSGroup: ptr.To[int64](2000)},
			perms: "0440", wantUID: fallback, wantGID: fallback, wantMode: "0440"},
		{name: "root pod asking 0400", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}, perms: "0400",
			wantDenial: "kvinject.io/perms-x: mode 0400 lets only the file's owner read it, and the app's user is not known at admission or is root (the agent then writes as 65532): set a non-root runAsUser in the pod's securityContext, or use 0444"},
		{name: "unknown group asking 0440", perms: "0440",
			wantDenial: "kvinject.io/perms-x: mode 0440 lets only the file's owner and group read it, and the app's group is not known at admission: set runAsGroup or fsGroup in the pod's securityContext, or use 0444"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{"kvinject.io/secret-x": "db"}
			if tc.perms != "" {
				ann["kvinject.io/perms-x"] = tc.perms
			}
			pod := podWith(ann)
			pod.Spec.SecurityContext = tc.psc
			err := Mutate(pod, testSA("ns", "app"), testOptions(t))
			if tc.wantDenial != "" {
				var d *Denial
				if !errors.As(err, &d) {
					t.Fatalf("Mutate = %v, want a denial", err)
				}
				if diff := cmp.Diff([]string{tc.wantDenial}, d.Problems); diff != "" {
					t.Errorf("problems (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			agent := pod.Spec.InitContainers[0]
			sc := agent.SecurityContext
			if sc.RunAsUser == nil || *sc.RunAsUser != tc.wantUID || sc.RunAsGroup == nil || *sc.RunAsGroup != tc.wantGID {
				t.Errorf("agent runs as %v:%v, want %d:%d", sc.RunAsUser, sc.RunAsGroup, tc.wantUID, tc.wantGID)
			}
			if s := agentSpec(t, agent); s.Files[0].Mode != tc.wantMode {
				t.Errorf("file mode %s, want %s", s.Files[0].Mode, tc.wantMode)
			}
		})
	}
}

func agentSpec(t *testing.T, agent corev1.Container) *spec.Spec {
	t.Helper()
	for _, e := range agent.Env {
		if e.Name == spec.EnvSpec {
			s, err := spec.Decode([]byte(e.Value))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("container %s has no %s", agent.Name, spec.EnvSpec)
	return nil
}

// TestDenialBounded: whatever a pod holds, its denial stays small.
func TestDenialBounded(t *testing.T) {
	t.Run("thousands of unknown annotations", func(t *testing.T) {
		ann := map[string]string{"kvinject.io/secret-x": "db"}
		for i := range 3415 {
			ann[fmt.Sprintf("kvinject.io/unknown-%04d", i)] = "v"
		}
		d := denial(t, podWith(ann))
		if len(d.Problems) != MaxDenialProblems+1 {
			t.Errorf("%d problem lines, want %d and a count of the rest", len(d.Problems), MaxDenialProblems+1)
		}
		if want := "and 3395 more problems: fix these first"; d.Problems[len(d.Problems)-1] != want {
			t.Errorf("last line %q, want %q", d.Problems[len(d.Problems)-1], want)
		}
		if n := len(d.Error()); n > 16<<10 {
			t.Errorf("denial is %d bytes, want at most 16 KiB", n)
		}
	})
	t.Run("a 200 KiB reference", func(t *testing.T) {
		ref := strings.Repeat("a", 100) + " " + strings.Repeat("b", 200<<10)
		d := denial(t, podWith(map[string]string{"kvinject.io/secret-x": ref}))
		quoted := `"` + strings.Repeat("a", 80) + `"… (204901 bytes)`
		want := `kvinject.io/secret-x: reference ` + quoted + `: secret name ` + quoted + ` is not valid: 1-127 letters, digits and hyphens`
		if diff := cmp.Diff([]string{want}, d.Problems); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
	})
	t.Run("a 200 KiB annotation name with a dash", func(t *testing.T) {
		// Its per-file candidates (secret-kkk...) are as long as it: no edit
		// distance to them, whose cost grows with the square of the length.
		k := "kvinject.io/a-" + strings.Repeat("k", 200<<10)
		if got := suggestAnnotation(k); got != annotationList {
			t.Errorf("hint %.200q, want the list of annotations", got)
		}
		if d := denial(t, podWith(map[string]string{"kvinject.io/secret-x": "db", k: "v"})); len(d.Problems) != 1 {
			t.Errorf("%d problems, want 1", len(d.Problems))
		}
	})
	t.Run("a 200 KiB annotation name", func(t *testing.T) {
		d := denial(t, podWith(map[string]string{"kvinject.io/secret-x": "db", "kvinject.io/" + strings.Repeat("k", 200<<10): "v"}))
		if len(d.Problems) != 1 || len(d.Problems[0]) > MaxProblemLength+len("…") {
			t.Errorf("problems %d, first %d bytes; want one of at most %d", len(d.Problems), len(d.Problems[0]), MaxProblemLength)
		}
	})
}

func denial(t *testing.T, pod *corev1.Pod) *Denial {
	t.Helper()
	err := Mutate(pod, testSA("ns", "app"), testOptions(t))
	var d *Denial
	if !errors.As(err, &d) {
		t.Fatalf("Mutate = %v, want a denial", err)
	}
	return d
}
