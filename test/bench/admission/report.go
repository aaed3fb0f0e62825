package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kvinject/kvinject/webhook"
)

const (
	beginMarker = "<!-- admission:begin -->"
	endMarker   = "<!-- admission:end -->"

	targetCPURatio = 1.3
	targetRSSMB    = 30.0
)

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
func hwmMB(r result) float64     { return float64(r.HWMKiB) / 1024 }

var serverDescriptions = map[string]string{
	"floor":           "`test/bench/floor`: net/http + crypto/tls, encoding/json into the `admission/v1` and `core/v1` types, a one-operation patch",
	"kvinject":        "the real `kvinject webhook` binary (manager, ServiceAccount informer, metrics off) against envtest's kube-apiserver, the ServiceAccount in its cache",
	"cr-floor":        "`test/bench/kvstatic -one-annotation`: controller-runtime's webhook server and typed `Defaulter[*corev1.Pod]` path (decode, deep copy, marshal, JSON-patch diff) around a Defaulter that only sets `kvinject.io/status`: the floor of the framework kvinject must use",
	"kvinject-static": "`test/bench/kvstatic`: `webhook.NewAdmissionWebhook` on controller-runtime's webhook server with a static ServiceAccount (no manager, no informer)",
}

func report(root string, c config, results map[cellKey][]result, bd []breakdownRow) (string, error) {
	model, nproc, goVersion := machine()
	rev, _ := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	var w bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }

	p("%s\n## Admission\n\n", beginMarker)
	p("_Written by `make bench` (`go run ./test/bench/admission`); do not edit by hand._\n\n")
	p("- Run: %s, kvinject `%s`\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), strings.TrimSpace(string(rev)))
	p("- Machine: %s, nproc %d; %s\n", model, nproc, goVersion)
	pin := "not pinned"
	if c.serverCPU != "" {
		pin = fmt.Sprintf("each server pinned to CPU %s (so GOMAXPROCS=1), the load generator to CPU %s", c.serverCPU, c.loadCPU)
	}
	p("- Method: a fresh server process per cell; a load generator process posts Pod CREATE AdmissionReviews (a Deployment's pod, %s KB of JSON: 3 containers with env, probes, resources and mounts, kvinject's label and 6 annotations) over loopback TLS with keep-alive; %s; %s warm-up, then %s measured; every cell %d times, interleaved; the table shows medians. CPU per request is the server's utime+stime (/proc/PID/stat) over the measured window divided by requests; peak RSS is the server's VmHWM.\n",
		podKB(), pin, c.warmup, c.duration, c.reps)
	p("- Servers:\n")
	for _, s := range c.servers {
		base, env, _ := strings.Cut(s, "+")
		d := serverDescriptions[base]
		if env != "" {
			d = fmt.Sprintf("as %s, with `%s` in its environment", base, strings.ReplaceAll(env, "+", " "))
		}
		p("  - **%s**: %s\n", s, d)
	}
	p("\n| server | protocol | c | req/s | p50 µs | p99 µs | CPU µs/req | peak RSS MB | RSS anon + file MB | CPU/req ÷ floor | RSS ÷ floor | CPU/req ÷ cr-floor |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, proto := range c.protos {
		for _, conc := range c.concs {
			floor := results[cellKey{"floor", proto, conc}]
			crFloor := results[cellKey{"cr-floor", proto, conc}]
			for _, s := range c.servers {
				rs := results[cellKey{s, proto, conc}]
				if len(rs) == 0 {
					continue
				}
				cr, rr, ccr := "", "", ""
				if s != "floor" && len(floor) > 0 {
					cr = fmt.Sprintf("%.2f", pairRatio(rs, floor, cpuPerReq))
					rr = fmt.Sprintf("%.2f", pairRatio(rs, floor, hwmMB))
				}
				if strings.HasPrefix(s, "kvinject") && len(crFloor) > 0 {
					ccr = fmt.Sprintf("%.2f", pairRatio(rs, crFloor, cpuPerReq))
				}
				p("| %s | %s | %d | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f + %.1f | %s | %s | %s |\n", s, rs[0].Proto, conc,
					field(rs, func(r result) float64 { return r.RPS }), field(rs, func(r result) float64 { return r.P50us }),
					field(rs, func(r result) float64 { return r.P99us }), field(rs, cpuPerReq), field(rs, hwmMB),
					field(rs, func(r result) float64 { return float64(r.AnonKiB) / 1024 }),
					field(rs, func(r result) float64 { return float64(r.FileKiB) / 1024 }), cr, rr, ccr)
			}
		}
	}
	p("\nRatios are medians of each repetition's kvinject cell over the floor cell run next to it.\n")

	// Targets (issue 7): CPU per request within 1.3x the floor, peak RSS under 30 MB at c=16.
	p("\n### Targets\n\n")
	for _, s := range c.servers {
		if !strings.HasPrefix(s, "kvinject") {
			continue
		}
		worstCPU, worstRSS := 0.0, 0.0
		var worstCPUCell, worstRSSCell string
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				rs, floor := results[cellKey{s, proto, conc}], results[cellKey{"floor", proto, conc}]
				if len(rs) == 0 || len(floor) == 0 {
					continue
				}
				if r := pairRatio(rs, floor, cpuPerReq); r > worstCPU {
					worstCPU, worstCPUCell = r, fmt.Sprintf("%s c=%d", proto, conc)
				}
				if conc == 16 {
					if m := field(rs, hwmMB); m > worstRSS {
						worstRSS, worstRSSCell = m, fmt.Sprintf("%s c=%d", proto, conc)
					}
				}
			}
		}
		if worstCPUCell != "" {
			p("- **%s** CPU per request ≤ %.1f× the floor's: %s (worst %.2f×, %s)\n", s, targetCPURatio,
				verdict(worstCPU <= targetCPURatio, worstCPU/targetCPURatio), worstCPU, worstCPUCell)
		}
		if worstRSSCell != "" {
			p("- **%s** peak RSS < %.0f MB at c=16: %s (worst %.1f MB, %s)\n", s, targetRSSMB,
				verdict(worstRSS < targetRSSMB, worstRSS/targetRSSMB), worstRSS, worstRSSCell)
		}
	}
	p("\nFor reference, from the issue (another 2-core machine, same method, not measured here): Azure Workload Identity's webhook 474-573 µs CPU per request and 46-51 MB RSS; the Vault Agent Injector 333-419 µs and 44-50 MB; the floor 150-175 µs and 15 MB.\n")

	if len(bd) > 0 {
		p("\n### Where the CPU goes\n\n")
		p("In-process, one request at a time without TLS or HTTP (`testing.Benchmark` in the benchmark program, same pod):\n\n")
		p("| step | µs/op | allocs/op | KB/op |\n|---|---:|---:|---:|\n")
		for _, r := range bd {
			p("| %s | %.1f | %d | %.1f |\n", r.name, r.usPerOp, r.allocs, r.kbPerOp)
		}
	}
	p("\n%s\n", notes(c, results, bd))
	p("%s\n", endMarker)
	return w.String(), nil
}

func verdict(met bool, ratio float64) string {
	if met {
		return "**met**"
	}
	return fmt.Sprintf("**missed** by %.0f%%", (ratio-1)*100)
}

func podKB() string {
	b, err := json.Marshal(benchPod(0))
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f", float64(len(b))/1024)
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

type breakdownRow struct {
	name    string
	usPerOp float64
	allocs  int64
	kbPerOp float64
}

// oneAnnotation is a Defaulter doing what the floor does, to price
// controller-runtime's decode, copy, marshal and diff alone.
type oneAnnotation struct{}

func (oneAnnotation) Default(_ context.Context, pod *corev1.Pod) error {
	pod.Annotations["kvinject.io/status"] = "injected"
	return nil
}

type staticSA struct{}

func (staticSA) GetServiceAccount(_ context.Context, namespace, name string) (webhook.ServiceAccount, error) {
	return webhook.ServiceAccount{Namespace: namespace, Name: name,
		Annotations: map[string]string{"azure.workload.identity/client-id": benchClientID}}, nil
}

// breakdown prices the steps of one admission in-process.
func breakdown() ([]breakdownRow, error) {
	body, err := benchReview(0)
	if err != nil {
		return nil, err
	}
	ctrllog.SetLogger(logr.Discard())
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	o := webhook.DefaultOptions()
	o.AgentImage, o.TenantID = "ghcr.io/kvinject/kvinject:bench", benchTenant
	if err := o.Validate(); err != nil {
		return nil, err
	}
	kv := webhook.NewAdmissionWebhook(scheme, &webhook.PodInjector{Options: &o, ServiceAccounts: staticSA{}}, nil)
	cr := admission.WithDefaulter[*corev1.Pod](scheme, oneAnnotation{})
	serve := func(h http.Handler) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"allowed":true`)) {
					b.Fatalf("HTTP %d: %.300s", rec.Code, rec.Body.Bytes())
				}
			}
		}
	}
	floorWork := func(b *testing.B) {
		b.ReportAllocs()
		patch := []byte(`[{"op":"add","path":"/metadata/annotations/kvinject.io~1status","value":"injected"}]`)
		for i := 0; i < b.N; i++ {
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &review); err != nil {
				b.Fatal(err)
			}
			var pod corev1.Pod
			if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
				b.Fatal(err)
			}
			pt := admissionv1.PatchTypeJSONPatch
			out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: &admissionv1.AdmissionResponse{
				UID: review.Request.UID, Allowed: true, PatchType: &pt, Patch: patch}})
			if err != nil || len(out) == 0 {
				b.Fatal(err)
			}
		}
	}
	pod := benchPod(0)
	pod.Namespace = benchNamespace
	sa, _ := staticSA{}.GetServiceAccount(context.Background(), benchNamespace, benchSA)
	copyPod := func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = pod.DeepCopy()
		}
	}
	mutate := func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := webhook.Mutate(pod.DeepCopy(), sa, &o); err != nil {
				b.Fatal(err)
			}
		}
	}
	steps := []struct {
		name string
		f    func(*testing.B)
	}{
		{"the floor's work: encoding/json decode of review and pod, one-op patch response", floorWork},
		{"controller-runtime typed Defaulter that only sets one annotation (decode, copy, marshal, diff)", serve(cr)},
		{"kvinject's webhook handler (`NewAdmissionWebhook`, static ServiceAccount)", serve(kv)},
		{"`Mutate` alone, on a decoded pod (includes a `DeepCopy`)", mutate},
		{"`DeepCopy` of the pod alone", copyPod},
	}
	var rows []breakdownRow
	for _, s := range steps {
		r := testing.Benchmark(s.f)
		if r.N == 0 {
			return nil, fmt.Errorf("breakdown %q failed", s.name)
		}
		rows = append(rows, breakdownRow{name: s.name, usPerOp: float64(r.NsPerOp()) / 1e3, allocs: r.AllocsPerOp(), kbPerOp: float64(r.AllocedBytesPerOp()) / 1024})
	}
	return rows, nil
}

// notes explain the results from this run's numbers; they are part of
// the generated section.
func notes(c config, results map[cellKey][]result, bd []breakdownRow) string {
	// across returns the median over all cells of f over a server's results.
	across := func(server string, f func(rs []result, proto string, conc int) (float64, bool)) (float64, bool) {
		var xs []float64
		for _, proto := range c.protos {
			for _, conc := range c.concs {
				if v, ok := f(results[cellKey{server, proto, conc}], proto, conc); ok {
					xs = append(xs, v)
				}
			}
		}
		return median(xs), len(xs) > 0
	}
	ratioTo := func(server, base string, g func(result) float64) (float64, bool) {
		return across(server, func(rs []result, proto string, conc int) (float64, bool) {
			b := results[cellKey{base, proto, conc}]
			if len(rs) == 0 || len(b) == 0 {
				return 0, false
			}
			return pairRatio(rs, b, g), true
		})
	}
	mem := func(server string, g func(result) float64) (float64, bool) {
		return across(server, func(rs []result, proto string, conc int) (float64, bool) {
			if conc != 16 || len(rs) == 0 {
				return 0, false
			}
			return field(rs, g), true
		})
	}
	anon := func(r result) float64 { return float64(r.AnonKiB) / 1024 }
	file := func(r result) float64 { return float64(r.FileKiB) / 1024 }

	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("### Why\n\n")
	if r, ok := ratioTo("cr-floor", "floor", cpuPerReq); ok {
		p("- **CPU.** controller-runtime's typed `Defaulter[*corev1.Pod]` path alone, around a Defaulter that does what the floor does (cr-floor), costs %.1f× the floor's CPU per request (median over the cells)", r)
		if k, ok := ratioTo("kvinject-static", "cr-floor", cpuPerReq); ok {
			p("; kvinject's own work (ServiceAccount lookup, annotation parsing and validation, the spec as JSON, the mutation, a bigger patch) adds %.0f%% on top", (k-1)*100)
		}
		p(". So 1.3× cannot be reached while the mutation stays a typed `admission.Defaulter` (the design rule: no hand-built JSON patches). Per request that path decodes the AdmissionReview (apimachinery's serializer first unmarshals the whole document with encoding/json to find apiVersion and kind, then decodes it again with sigs.k8s.io/json), decodes the pod the same way, deep-copies it, compares it with `reflect.DeepEqual`, marshals the mutated pod, unmarshals both the request's pod and the mutated one into `map[string]any` and diffs them (gomodules.xyz/jsonpatch), then marshals the patch. The floor decodes once and writes a constant patch.\n")
	}
	if len(bd) >= 5 {
		p("- In-process (table above), controller-runtime's handler alone is %.1f× the floor's work and kvinject's whole handler %.1f×; `Mutate` is %.0f µs of kvinject's %.0f µs. No change to `Mutate` can move the ratio by more than that share.\n",
			bd[1].usPerOp/bd[0].usPerOp, bd[2].usPerOp/bd[0].usPerOp, bd[3].usPerOp-bd[4].usPerOp, bd[2].usPerOp)
	}
	if a, ok := mem("kvinject", anon); ok {
		f, _ := mem("kvinject", file)
		p("- **Memory.** At c=16 the real server holds %.1f MB of anonymous memory (heap, stacks) and %.1f MB of file-backed pages: the parts of its binary it has touched. `kvinject` is one binary (webhook, agent, `inject`, the Azure SDK) and runs a manager with a ServiceAccount informer", a, f)
		if sa, ok := mem("kvinject-static", anon); ok {
			sf, _ := mem("kvinject-static", file)
			p("; the admission path alone in a webhook-only binary (kvinject-static) needs %.1f + %.1f MB", sa, sf)
		}
		p(". Under %.0f MB would need a webhook-only binary without the manager", targetRSSMB)
		if ca, ok := mem("cr-floor", anon); ok {
			cf, _ := mem("cr-floor", file)
			p(", and controller-runtime's webhook server with the trivial Defaulter (cr-floor) already needs %.1f + %.1f MB, %.1f MB peak", ca, cf, func() float64 { v, _ := mem("cr-floor", hwmMB); return v }())
		}
		p(".\n")
	}
	for _, s := range c.servers {
		base, env, ok := strings.Cut(s, "+")
		if !ok || len(results[cellKey{base, c.protos[0], c.concs[0]}]) == 0 {
			continue
		}
		if r, ok := ratioTo(s, base, cpuPerReq); ok {
			m, _ := ratioTo(s, base, hwmMB)
			p("- **GC.** `%s` changes %s's CPU per request by %+.0f%% and its peak RSS by %+.0f%% (medians over the cells): a trade between the two targets, not a way to meet both, so the default (GOGC=100) is kept; operators can set GOGC and GOMEMLIMIT in the Deployment.\n",
				strings.ReplaceAll(env, "+", " "), base, (r-1)*100, (m-1)*100)
		}
	}
	return w.String()
}
