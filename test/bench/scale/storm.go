package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/e2e/harness"
)

// Bounds of the storm: it stops by itself.
const (
	stormRolloutLimit = 8 * time.Minute // until every pod runs
	stormReturnLimit  = 2 * time.Minute // until a killed replica serves again
	// stormPodMargin is left free of the node's pod capacity.
	stormPodMargin = 4
)

// stormResult is what the storm measured.
type stormResult struct {
	replicas, capacity     int
	control, storm         time.Duration
	killedWebhook          string // pod/PID
	killedCache            string
	webhookBack            time.Duration // kill to the container ready again
	cacheBack              time.Duration
	pods, notInjected      int
	direct, fromCache      int // pods whose agent signed in itself / read through the cache
	refused                float64
	refusedByType          map[string]float64
	failedCreate           int32
	tokens, reads, reqs    int64
	p50, p99               time.Duration
	p50Bounded, p99Bounded bool
	admissions             float64
}

// runStorm scales a Deployment of pods reading through the cache from 0
// to replicas (fewer when the node holds fewer), kills one webhook replica
// and one cache replica by PID while it rolls out, and counts what
// happened; the no-op init control runs the same scale first.
func runStorm(ctx context.Context, env *harness.Env, replicas int) (stormResult, error) {
	c := env.Cluster
	var res stormResult
	capacity, err := podCapacity(ctx, c)
	if err != nil {
		return res, err
	}
	res.capacity, res.replicas = capacity, min(replicas, capacity-stormPodMargin)
	fmt.Printf("storm: %d replicas (asked %d; the node has room for %d more pods)\n", res.replicas, replicas, capacity)
	if res.replicas < 10 {
		return res, fmt.Errorf("the node has room for %d pods: too few for a storm", capacity)
	}
	control, err := scaleOnce(ctx, c, env.AppImage, modeNoopInit, res.replicas)
	if err != nil {
		return res, err
	}
	res.control = control.duration
	fmt.Printf("storm: control (no-op init) %s\n", res.control.Round(10*time.Millisecond))

	svc, err := c.Client.CoreV1().Services(harness.KvinjectNS).Get(ctx, harness.CacheService, metav1.GetOptions{})
	if err != nil {
		return res, err
	}
	d := deployment(env.AppImage, modeInjected)
	d.Name = "storm"
	d.Spec.Selector.MatchLabels["app"] = "scale-storm"
	d.Spec.Template.Labels["app"] = "scale-storm"
	d.Spec.Template.Annotations[spec.AnnotationCache] = spec.CacheOn
	// No cluster DNS on the local cluster: the cache Service's name by hostAliases.
	d.Spec.Template.Spec.HostAliases = []corev1.HostAlias{{IP: svc.Spec.ClusterIP, Hostnames: []string{harness.CacheService + "." + harness.KvinjectNS + ".svc.cluster.local"}}}
	apps := c.Client.AppsV1().Deployments(ns)
	_ = apps.Delete(ctx, d.Name, metav1.DeleteOptions{})
	if err := waitPods(ctx, c, "scale-storm", 0); err != nil {
		return res, err
	}
	before, err := snapshot(ctx, env)
	if err != nil {
		return res, err
	}
	if _, err := apps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return res, err
	}
	start := time.Now()
	if _, err := c.KubectlOut(ctx, nil, "-n", ns, "scale", "deployment/"+d.Name, "--replicas="+strconv.Itoa(res.replicas)); err != nil {
		return res, err
	}
	kills, err := rollOutKilling(ctx, c, "scale-storm", res.replicas)
	if err != nil {
		return res, err
	}
	res.storm = time.Since(start)
	fmt.Printf("storm: all %d running after %s\n", res.replicas, res.storm.Round(10*time.Millisecond))
	res.killedWebhook, res.killedCache = kills[0].what, kills[1].what
	for i, k := range kills {
		back, err := waitBack(ctx, c, k)
		if err != nil {
			return res, err
		}
		if i == 0 {
			res.webhookBack = back
		} else {
			res.cacheBack = back
		}
	}
	after, err := snapshot(ctx, env)
	if err != nil {
		return res, err
	}
	if err := countPods(ctx, c, "scale-storm", &res); err != nil {
		return res, err
	}
	res.tokens, res.reads, res.reqs = after.tokens-before.tokens, after.reads-before.reads, after.reqs-before.reqs
	res.refused = after.refused - before.refused
	res.refusedByType = map[string]float64{}
	for k, v := range after.refusedByType {
		if d := v - before.refusedByType[k]; d > 0 {
			res.refusedByType[k] = d
		}
	}
	h := after.hist.minus(before.hist)
	res.admissions = h.count
	res.p50, res.p50Bounded = h.quantile(0.5)
	res.p99, res.p99Bounded = h.quantile(0.99)
	events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
	if err != nil {
		return res, err
	}
	for _, e := range events.Items {
		if e.LastTimestamp.Time.After(start.Add(-time.Second)) || e.EventTime.Time.After(start.Add(-time.Second)) {
			res.failedCreate += max(e.Count, 1)
		}
	}
	if err := apps.Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil {
		return res, err
	}
	return res, waitPods(ctx, c, "scale-storm", 0)
}

// podCapacity is how many more pods the node can run: its allocatable
// pods less the pods on it that have not ended.
func podCapacity(ctx context.Context, c *harness.Cluster) (int, error) {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	if len(nodes.Items) != 1 {
		return 0, fmt.Errorf("%d nodes, want the local cluster's one", len(nodes.Items))
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	used := 0
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			used++
		}
	}
	return int(nodes.Items[0].Status.Allocatable.Pods().Value()) - used, nil
}

// kill is a replica killed during the rollout.
type kill struct {
	what      string
	namespace string
	pod       string
	restarts  int32
	at        time.Time
}

// rollOutKilling waits until n pods of app run, killing one webhook
// replica when a quarter of them exist and one cache replica at a half.
func rollOutKilling(ctx context.Context, c *harness.Cluster, app string, n int) ([]kill, error) {
	deadline := time.Now().Add(stormRolloutLimit)
	var kills []kill
	targets := []struct {
		component, exe string
		at             int
	}{{"webhook", "/kvinject-webhook", n / 4}, {"cache", "/kvinject-cache", n / 2}}
	for {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return nil, err
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if len(kills) < len(targets) && len(list.Items) >= targets[len(kills)].at {
			t := targets[len(kills)]
			k, err := killReplica(ctx, c, t.component, t.exe)
			if err != nil {
				return nil, err
			}
			fmt.Printf("storm: %d pods created, %d running: killed %s\n", len(list.Items), running, k.what)
			kills = append(kills, k)
			continue
		}
		if len(kills) == len(targets) && len(list.Items) == n && running == n {
			return kills, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %d pods, %d running after %s, want %d", app, len(list.Items), running, stormRolloutLimit, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killReplica SIGKILLs the server process of a ready replica of kvinject's
// component (webhook or cache), found by its pod's UID in /proc/PID/cgroup.
func killReplica(ctx context.Context, c *harness.Cluster, component, exe string) (kill, error) {
	pods, err := c.Client.CoreV1().Pods(harness.KvinjectNS).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=kvinject,app.kubernetes.io/component=" + component})
	if err != nil {
		return kill{}, err
	}
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !ready(&p) {
			continue
		}
		pid, err := containerPID(p.UID, exe)
		if err != nil {
			return kill{}, fmt.Errorf("%s: %w", p.Name, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return kill{}, fmt.Errorf("kill %s (PID %d): %w", p.Name, pid, err)
		}
		return kill{what: fmt.Sprintf("%s (%s, PID %d)", p.Name, exe, pid), namespace: p.Namespace, pod: p.Name,
			restarts: restarts(&p), at: time.Now()}, nil
	}
	return kill{}, fmt.Errorf("no ready %s replica to kill", component)
}

// containerPID finds the process running exe in the pod with uid: the
// kubelet puts a pod's containers in a cgroup named after its UID
// ("pod<uid>" with the cgroupfs driver, "pod<uid with _>" with systemd).
func containerPID(uid types.UID, exe string) (int, error) {
	ids := []string{"pod" + string(uid), "pod" + strings.ReplaceAll(string(uid), "-", "_")}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		if arg0, _, _ := strings.Cut(string(cmdline), "\x00"); arg0 != exe {
			continue
		}
		cg, err := os.ReadFile(filepath.Join(d, "cgroup"))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(string(cg), id) }) {
			return strconv.Atoi(filepath.Base(d))
		}
	}
	return 0, fmt.Errorf("no process %s in the cgroup of pod %s", exe, uid)
}

// waitBack waits until the killed replica's container restarted and is
// ready again, and returns the time from the kill to its Ready condition's
// last transition (both to the second).
func waitBack(ctx context.Context, c *harness.Cluster, k kill) (time.Duration, error) {
	deadline := k.at.Add(stormReturnLimit)
	for {
		p, err := c.Client.CoreV1().Pods(k.namespace).Get(ctx, k.pod, metav1.GetOptions{})
		if err != nil {
			return 0, err
		}
		if restarts(p) > k.restarts && ready(p) {
			// When it turned ready again, by the kubelet's clock (1 s).
			return readySince(p).Sub(k.at.Truncate(time.Second)), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not back within %s of the kill", k.what, stormReturnLimit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readySince is when the pod's Ready condition last turned.
func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// countPods checks every pod of app: injected (the status annotation and
// the agent first among the init containers), and how its agent read: from
// the cache, or signed in to Entra ID itself.
func countPods(ctx context.Context, c *harness.Cluster, app string, res *stormResult) error {
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return err
	}
	res.pods = len(list.Items)
	for _, p := range list.Items {
		if p.Annotations[spec.AnnotationStatus] != spec.StatusInjected || len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != spec.AgentContainerName {
			res.notInjected++
			continue
		}
		b, err := c.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: spec.AgentContainerName, LimitBytes: ptr.To(int64(64 << 10))}).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("agent log of %s: %w", p.Name, err)
		}
		log := string(b)
		if strings.Contains(log, `"signed in"`) {
			res.direct++
		}
		if strings.Contains(log, `"fromCache":`) && !strings.Contains(log, `"fromCache":0`) {
			res.fromCache++
		}
	}
	return nil
}

// counters are the cluster's and the emulator's counters at one moment.
type counters struct {
	hist                histogram
	refused             float64
	refusedByType       map[string]float64
	tokens, reads, reqs int64
}

func snapshot(ctx context.Context, env *harness.Env) (counters, error) {
	var s counters
	var err error
	if s.hist, err = webhookHistogram(ctx, env.Cluster); err != nil {
		return s, err
	}
	if s.refused, s.refusedByType, err = webhookRejections(ctx, env.Cluster); err != nil {
		return s, err
	}
	var stats struct {
		Classes map[string]struct {
			Requests int64 `json:"requests"`
		} `json:"classes"`
	}
	if err := env.Emulator.Admin(ctx, "GET", "/stats", nil, &stats); err != nil {
		return s, fmt.Errorf("emulator stats: %w", err)
	}
	for class, st := range stats.Classes {
		s.reqs += st.Requests
		switch class {
		case "token":
			s.tokens = st.Requests
		case "kv-get":
			s.reads = st.Requests
		}
	}
	return s, nil
}

// webhookRejections sums the API server's
// apiserver_admission_webhook_rejection_count for the kvinject webhook:
// admissions it refused because of the webhook (calling errors included),
// by error_type.
func webhookRejections(ctx context.Context, c *harness.Cluster) (float64, map[string]float64, error) {
	b, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("scrape the API server: %w", err)
	}
	const metric = "apiserver_admission_webhook_rejection_count{"
	total, byType := 0.0, map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) || !strings.Contains(line, `name="`+webhookName+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		total += v
		byType[between(line, `error_type="`, `"`)] += v
	}
	return total, byType, sc.Err()
}

// quantile is the upper bound of the bucket holding quantile q, as the
// histogram's buckets allow; false when that is the +Inf bucket.
func (h histogram) quantile(q float64) (time.Duration, bool) {
	if h.count == 0 {
		return 0, false
	}
	bounds := make([]float64, 0, len(h.buckets))
	for le := range h.buckets {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	for _, le := range bounds {
		if h.buckets[le] >= q*h.count {
			if le > 1e9 {
				return 0, false
			}
			return time.Duration(le * float64(time.Second)), true
		}
	}
	return 0, false
}

func stormSection(r stormResult) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "## Storm: %d pods through the cache while a webhook and a cache replica die\n\n", r.replicas)
	fmt.Fprintf(&b, "_Written by `make bench-storm` (`go run ./test/bench/scale -storm`) on %s, %s (one node: kubelet, containerd, %d CPUs); do not edit by hand._\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, cpus())
	fmt.Fprintf(&b, "A Deployment scaled from 0 to %d replicas (the node had room for %d more pods, %d kept free), every pod reading the reference secret through the cluster cache (`%s: \"true\"`), 2 webhook and 2 cache replicas. ", r.replicas, r.capacity, stormPodMargin, spec.AnnotationCache)
	b.WriteString("When a quarter of the pods exist, one webhook replica's server process is killed (SIGKILL, by PID, found by its pod's cgroup); at a half, one cache replica's. The kubelet restarts them. The control is the same scale with a no-op init container instead of injection, run just before. ")
	fmt.Fprintf(&b, "Bounded: the rollout must finish within %s, each killed replica be back within %s.\n\n", stormRolloutLimit, stormReturnLimit)
	b.WriteString("| | value |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("time until all Running, storm", r.storm.Round(10*time.Millisecond).String())
	row("time until all Running, no-op init control", r.control.Round(10*time.Millisecond).String())
	if r.control > 0 {
		row("storm ÷ control", fmt.Sprintf("%.2fx", float64(r.storm)/float64(r.control)))
	}
	row("webhook replica killed", fmt.Sprintf("%s; ready again %s after the kill", r.killedWebhook, r.webhookBack.Round(100*time.Millisecond)))
	row("cache replica killed", fmt.Sprintf("%s; ready again %s after the kill", r.killedCache, r.cacheBack.Round(100*time.Millisecond)))
	row("pods at the end / admitted without injection", fmt.Sprintf("%d / **%d**", r.pods, r.notInjected))
	row("pods whose agent read through the cache / signed in to Azure itself (fallback)", fmt.Sprintf("%d / %d", r.fromCache, r.direct))
	types := make([]string, 0, len(r.refusedByType))
	for k, v := range r.refusedByType {
		types = append(types, fmt.Sprintf("%s %.0f", k, v))
	}
	slices.Sort(types)
	refusedBy := ""
	if len(types) > 0 {
		refusedBy = " (" + strings.Join(types, ", ") + ")"
	}
	row("admission calls refused by the API server (`apiserver_admission_webhook_rejection_count`)", fmt.Sprintf("%.0f%s; the ReplicaSet's FailedCreate events: %d", r.refused, refusedBy, r.failedCreate))
	row("upstream requests (emulator): all / token exchanges / Key Vault reads", fmt.Sprintf("%d / %d / %d", r.reqs, r.tokens, r.reads))
	bound := func(d time.Duration, ok bool) string {
		if !ok {
			return "above the largest bucket"
		}
		return "≤ " + d.String()
	}
	row("webhook admission latency, the API server's histogram (`apiserver_admission_webhook_admission_duration_seconds`)", fmt.Sprintf("%.0f calls; p50 %s, p99 %s (bucket bounds)", r.admissions, bound(r.p50, r.p50Bounded), bound(r.p99, r.p99Bounded)))
	verdict := "**met**"
	if r.notInjected > 0 || r.pods != r.replicas {
		verdict = "**missed**"
	}
	fmt.Fprintf(&b, "\n- Every pod injected and Running after the kills (none admitted without injection: the objectSelector and `failurePolicy: Fail`): %s.\n", verdict)
	return b.String()
}
