package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	beginMarker = "<!-- admission:begin -->"
	endMarker   = "<!-- admission:end -->"

	// Targets (issue 10): kvinject's CPU per request within 1.5x the
	// floor's and below both peers', its p99 at c=16 below both peers', its
	// peak RSS at most 30 MB at c=16.
	targetFloorRatio = 1.5
	targetRSSMB      = 30.0
	targetConc       = 16
)

var peers = []string{"vault-k8s", "azwi"}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func field(rs []result, f func(result) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// pairRatio is the median over repetitions of a/b, each repetition's cells
// having run next to each other.
func pairRatio(a, b []result, f func(result) float64) float64 {
	var xs []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if f(b[i]) > 0 {
			xs = append(xs, f(a[i])/f(b[i]))
		}
	}
	return median(xs)
}

func cpuPerReq(r result) float64 { return r.CPUPerReqUs }
func p99ms(r result) float64     { return r.P99us / 1000 }
func hwmMB(r result) float64     { return float64(r.HWMKiB) / 1024 }

func describe(s string, c config, pl *plan) string {
	sum := ""
	if h := pl.PeerSHA256[s]; h != "" {
		sum = fmt.Sprintf("; binary sha256 `%.12s…`", h)
	}
	switch s {
	case "floor":
		return "`test/bench/floor`, the least a pod-mutating webhook can do: net/http and crypto/tls, encoding/json into the `admission/v1` and `core/v1` types, a one-operation patch adding an annotation; no API server. Gets kvinject's pod."
	case "vault-k8s":
		return fmt.Sprintf("the HashiCorp Vault Agent Injector, vault-k8s %s, `vault-k8s agent-inject` with its defaults (it logs every request at info), TLS from files, the in-cluster configuration of a ServiceAccount bound to cluster-admin; opt-in: `vault.hashicorp.com/agent-inject`, `role`, one `agent-inject-secret-` and its `agent-inject-template-` annotation; injects an init container and a sidecar running Vault Agent%s.", c.vaultK8sVersion, sum)
	case "azwi":
		return fmt.Sprintf("the Azure Workload Identity mutating webhook %s with its defaults (a controller-runtime manager reading ServiceAccounts through its cache), certificate rotation off; opt-in: the `azure.workload.identity/use` label, the ServiceAccount's `azure.workload.identity/client-id`; injects the AZURE_* variables and a projected token volume%s.", c.azwiVersion, sum)
	case "kvinject":
		return "the real webhook binary, `kvinject-webhook` as the manifests run it (controller-runtime's webhook server and manager, a metadata-only ServiceAccount informer, metrics off); opt-in: kvinject's label and annotations (a vault, two secret properties, a template with its mode); injects the agent init container, its volumes and the mounts."
	}
	return ""
}

func report(c config, pl *plan, results map[cellKey][]result, idle map[string]*idleMem) (string, error) {
	model, nproc, goVersion := machine()
	rev, _ := exec.Command("git", "-C", pl.Root, "describe", "--tags", "--always", "--dirty").Output()
	var w bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	ran := func(s string) bool { return len(results[cellKey{s, c.protos[0], c.concs[0]}]) > 0 }

	p("%s\n## Admission\n\n", beginMarker)
	p("_Written by `make bench-admission` (`go run ./test/bench/admission`); do not edit by hand._\n\n")
	p("- Run: %s, kvinject `%s`, %s in all (builds included).\n", time.Now().UTC().Format("2006-01-02 15:04 MST"),
		strings.TrimSpace(string(rev)), time.Since(pl.Start).Round(time.Second))
	p("- Machine: %s, nproc %d; %s.\n", model, nproc, goVersion)
	pin := "nothing pinned"
	if c.serverCPU != "" {
		pin = fmt.Sprintf("every server pinned to CPU %s (so GOMAXPROCS=1 for all), the load generator to CPU %s", c.serverCPU, c.loadCPU)
	}
	isolated := ""
	if pl.Isolated {
		isolated = " envtest, the servers and the load generator ran in private network and mount namespaces: loopback only"
		if slices.Contains(pl.Servers, "vault-k8s") {
			isolated += ", a tmpfs over /run holding vault-k8s's in-cluster credentials"
		}
		isolated += "."
	}
	p("- Method: a fresh server process per cell (server, protocol, concurrency), %s; a load generator process posts Pod CREATE AdmissionReviews over loopback TLS with keep-alive, c requests at a time, %s warm-up then %s measured; every cell %s, the servers interleaved (every other round in reverse order); the tables show medians, and a ratio is the median of the per-round ratios of cells run next to each other. CPU per request is the server's utime+stime (/proc/PID/stat) over the measured window divided by requests; p50 and p99 are latencies seen by the load generator; peak RSS is the server's VmHWM at the end.%s%s\n",
		pin, c.warmup, c.duration, times(c.reps), apiServer(pl), isolated)
	p("- Pods: one base pod for all, a Deployment's pod (generateName, defaults, an owner ReplicaSet, an init container and 2 containers with env, probes, resources and mounts, the kube-api-access volume), plus each injector's opt-in; every cell's first response is checked for the injection (`-expect`). Requests: %s.\n", podSizes(pl))
	p("- Servers:\n")
	for _, s := range pl.Servers {
		p("  - **%s**: %s\n", s, describe(s, c, pl))
	}
	for _, n := range pl.Notes {
		p("- %s\n", n)
	}

	p("\n| server | protocol | c | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MB | RSS anon + file MB | patch B | CPU ÷ floor | p99 ÷ floor | RSS ÷ floor |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, proto := range c.protos {
		for _, conc := range c.concs {
			floor := results[cellKey{"floor", proto, conc}]
			for _, s := range pl.Servers {
				rs := results[cellKey{s, proto, conc}]
				if len(rs) == 0 {
					continue
				}
				var ratios [3]string
				if s != "floor" && len(floor) > 0 {
					for i, f := range []func(result) float64{cpuPerReq, p99ms, hwmMB} {
						ratios[i] = fmt.Sprintf("%.2f", pairRatio(rs, floor, f))
					}
				}
				p("| %s | %s | %d | %.0f | %.2f | %.2f | %.0f | %.1f | %.1f + %.1f | %.0f | %s | %s | %s |\n", s, rs[0].Proto, conc,
					field(rs, func(r result) float64 { return r.RPS }), field(rs, func(r result) float64 { return r.P50us / 1000 }),
					field(rs, p99ms), field(rs, cpuPerReq), field(rs, hwmMB),
					field(rs, func(r result) float64 { return float64(r.AnonKiB) / 1024 }),
					field(rs, func(r result) float64 { return float64(r.FileKiB) / 1024 }),
					field(rs, func(r result) float64 { return float64(r.PatchBytes) }), ratios[0], ratios[1], ratios[2])
			}
		}
	}

	var ranPeers []string
	for _, pe := range peers {
		if ran(pe) {
			ranPeers = append(ranPeers, pe)
		}
	}
	if ran("kvinject") && len(ranPeers) > 0 {
		p("\nkvinject over each peer (below 1: kvinject uses less):\n\n| protocol | c |")
		for _, m := range []string{"CPU", "p99", "RSS"} {
			for _, pe := range ranPeers {
				p(" %s ÷ %s |", m, pe)
			}
		}
		p("\n|---|---:|%s\n", strings.Repeat("---:|", 3*len(ranPeers)))
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				kv := results[cellKey{"kvinject", proto, conc}]
				p("| %s | %d |", kv[0].Proto, conc)
				for _, f := range []func(result) float64{cpuPerReq, p99ms, hwmMB} {
					for _, pe := range ranPeers {
						p(" %.2f |", pairRatio(kv, results[cellKey{pe, proto, conc}], f))
					}
				}
				p("\n")
			}
		}
	}

	p("\n### Targets\n\nComputed from this run; a target holds only if it holds in every cell it covers, and the worst cell is shown.\n\n")
	for _, t := range targets(c, results, ran) {
		p("- %s\n", t)
	}
	p("%s", rssNote(c, results))
	p("%s", idleTable(c, idle))

	p("\n### Running it\n\n")
	p("`make bench-admission` rewrites this section (`go run ./test/bench/admission -reps 2 -duration 3s`; `-out -` prints it instead). It needs the Kubernetes binaries (`make cluster-binaries`). The peers are optional: it runs them from `bin/peers/azwi-webhook` and `bin/peers/vault-k8s`, or from `make bench-admission AZWI=PATH VAULT_K8S=PATH` (`-azwi`, `-vault-k8s`; a `.gz` is decompressed), and only as root with `unshare`, since azwi listens on every address and vault-k8s reads credentials at a fixed path. Build them with `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'`: azwi from %s, vault-k8s from %s. A missing peer is skipped with a note here; `-servers floor,kvinject` leaves them out.\n",
		peerBuild["azwi"], peerBuild["vault-k8s"])
	p("%s\n", endMarker)
	return w.String(), nil
}

// rssNote says where kvinject's resident set goes at c=16, beside the
// floor's and the peers', from this run's RssAnon and RssFile.
func rssNote(c config, results map[cellKey][]result) string {
	split := func(server string) (anon, file float64, ok bool) {
		for _, proto := range c.protos {
			if rs := results[cellKey{server, proto, targetConc}]; len(rs) > 0 {
				return field(rs, func(r result) float64 { return float64(r.AnonKiB) / 1024 }),
					field(rs, func(r result) float64 { return float64(r.FileKiB) / 1024 }), true
			}
		}
		return 0, 0, false
	}
	kvAnon, kvFile, ok := split("kvinject")
	if !ok {
		return ""
	}
	var others []string
	for _, s := range []string{"floor", "vault-k8s", "azwi"} {
		if a, f, ok := split(s); ok {
			others = append(others, fmt.Sprintf("%s %.1f + %.1f MB", s, a, f))
		}
	}
	note := fmt.Sprintf("\nWhere the resident set goes at c=%d (RssAnon + RssFile, %s): kvinject %.1f + %.1f MB; %s. "+
		"RssFile is pages of the executable mapped from the page cache, shared and reclaimable; kvinject's webhook binary "+
		"(`kvinject-webhook`) holds controller-runtime's webhook server and manager and client-go (its ServiceAccount cache, "+
		"certificate reload and graceful shutdown), whose package initialisers run at start, as in both peers, and none of "+
		"the user commands' packages nor k8s.io/apiserver.", targetConc, c.protos[0], kvAnon, kvFile, strings.Join(others, ", "))
	if kvFile > targetRSSMB {
		note += fmt.Sprintf(" The file-backed part alone is above %.0f MB, so no change to the admission path meets the target; it would take a webhook without controller-runtime and client-go.", targetRSSMB)
	}
	return note + "\n"
}

// idleTable shows kvinject's two servers idle: the webhook and the cache
// replica, each a fresh process read after it is ready.
func idleTable(c config, idle map[string]*idleMem) string {
	wh, cache := idle["kvinject"], idle["kvinject-cache"]
	if wh == nil || cache == nil {
		return ""
	}
	med := func(xs []int64) float64 {
		fs := make([]float64, len(xs))
		for i, x := range xs {
			fs[i] = float64(x) / 1024
		}
		return median(fs)
	}
	var w strings.Builder
	fmt.Fprintf(&w, "\n### kvinject's servers idle\n\nEach a fresh process against the same envtest, read %s after its /readyz answers, before any request, %s (medians): VmRSS and its parts.\n\n", idleSettle, times(c.reps))
	w.WriteString("| server | binary | VmRSS MB | RssAnon MB | RssFile MB |\n|---|---:|---:|---:|---:|\n")
	for _, r := range []struct {
		name string
		m    *idleMem
	}{{"webhook (`kvinject-webhook`)", wh}, {"cache replica (`kvinject-cache`)", cache}} {
		fmt.Fprintf(&w, "| %s | %.1f MB | %.1f | %.1f | %.1f |\n", r.name, float64(r.m.BinBytes)/1e6, med(r.m.RSSKiB), med(r.m.AnonKiB), med(r.m.FileKiB))
	}
	verdict := "**met**"
	if med(cache.RSSKiB) > med(wh.RSSKiB) {
		verdict = "**missed**"
	}
	fmt.Fprintf(&w, "\n- The cache replica's idle resident set at most the webhook's: %.1f MB against %.1f MB: %s.\n", med(cache.RSSKiB), med(wh.RSSKiB), verdict)
	return w.String()
}

// targets returns the targets with their verdicts.
func targets(c config, results map[cellKey][]result, ran func(string) bool) []string {
	if !ran("kvinject") {
		return []string{"kvinject did not run: no verdicts."}
	}
	type worst struct {
		v    float64
		cell string
		ok   bool
	}
	// over returns the worst (largest) f over the cells, c=16 only if only16.
	over := func(only16 bool, f func(kv []result, proto string, conc int) (float64, bool)) worst {
		var w worst
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				if only16 && conc != targetConc {
					continue
				}
				kv := results[cellKey{"kvinject", proto, conc}]
				if len(kv) == 0 {
					continue
				}
				if v, ok := f(kv, proto, conc); ok && (!w.ok || v > w.v) {
					w = worst{v, fmt.Sprintf("%s c=%d", kv[0].Proto, conc), true}
				}
			}
		}
		return w
	}
	ratioTo := func(base string, g func(result) float64, only16 bool) worst {
		return over(only16, func(kv []result, proto string, conc int) (float64, bool) {
			b := results[cellKey{base, proto, conc}]
			if len(b) == 0 {
				return 0, false
			}
			return pairRatio(kv, b, g), true
		})
	}
	var out []string
	line := func(what string, w worst, limit float64, strict bool, unit string, missing string) {
		switch {
		case !w.ok:
			out = append(out, fmt.Sprintf("kvinject %s: **not measured** (%s).", what, missing))
		default:
			met := w.v <= limit
			if strict {
				met = w.v < limit
			}
			v := "**met**"
			if !met {
				v = fmt.Sprintf("**missed** by %.0f%%", (w.v/limit-1)*100)
			}
			num := fmt.Sprintf("%.2f×", w.v)
			if unit == " MB" {
				num = fmt.Sprintf("%.1f MB", w.v)
			}
			out = append(out, fmt.Sprintf("kvinject %s: %s (worst %s, %s).", what, v, num, w.cell))
		}
	}
	line(fmt.Sprintf("CPU per request ≤ %.1f× the floor's", targetFloorRatio), ratioTo("floor", cpuPerReq, false), targetFloorRatio, false, "", "the floor did not run")
	for _, pe := range peers {
		line("CPU per request below "+pe+"'s", ratioTo(pe, cpuPerReq, false), 1, true, "", pe+" did not run")
	}
	for _, pe := range peers {
		line(fmt.Sprintf("p99 at c=%d below %s's", targetConc, pe), ratioTo(pe, p99ms, true), 1, true, "", fmt.Sprintf("%s or c=%d did not run", pe, targetConc))
	}
	line(fmt.Sprintf("peak RSS ≤ %.0f MB at c=%d", targetRSSMB, targetConc), over(true, func(kv []result, _ string, _ int) (float64, bool) {
		return field(kv, hwmMB), true
	}), targetRSSMB, false, " MB", fmt.Sprintf("no c=%d cell", targetConc))
	return out
}

// podSizes lists the AdmissionReview size each server gets.
func podSizes(pl *plan) string {
	var parts []string
	seen := map[string]bool{}
	for _, s := range pl.Servers {
		o := specs[s].optIn
		if seen[o] {
			continue
		}
		seen[o] = true
		b, err := benchReview(0, o)
		if err != nil {
			return "?"
		}
		who := o
		if o == optInKvinject && slices.Contains(pl.Servers, "floor") {
			who = "kvinject and the floor"
		}
		parts = append(parts, fmt.Sprintf("%.1f KB of JSON for %s", float64(len(b))/1024, who))
	}
	return strings.Join(parts, ", ")
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// apiServer says which servers read envtest's kube-apiserver, and its
// version (the name of its directory in bin/k8s).
func apiServer(pl *plan) string {
	if !slices.ContainsFunc(pl.Servers, func(s string) bool { return s != "floor" }) {
		return ""
	}
	version := ""
	if m, _ := filepath.Glob(filepath.Join(pl.Root, "bin/k8s/v*/kube-apiserver")); len(m) > 0 {
		slices.Sort(m)
		version = " " + filepath.Base(filepath.Dir(m[len(m)-1]))
	}
	return fmt.Sprintf(" All servers but the floor talk to envtest's kube-apiserver%s and etcd, started once for the run.", version)
}

// writeSection replaces the Admission section of path (between the
// markers), keeping the rest of the file; it appends the section when the
// file has none.
func writeSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	var out string
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	switch {
	case i >= 0 && j > i:
		out = s[:i] + strings.TrimSuffix(section, "\n") + s[j+len(endMarker):]
	case len(strings.TrimSpace(s)) == 0:
		out = "# Benchmarks\n\n" + section
	default:
		out = strings.TrimRight(s, "\n") + "\n\n" + section
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return err
	}
	logf("wrote the Admission section of %s", path)
	return nil
}
