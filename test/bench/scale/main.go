// Command scale is benchmark 3 of `make bench`: on the local cluster, a
// Deployment scaled from 0 to 50 replicas, timed until every pod runs, in
// three modes: without injection, with a no-op init container (the control:
// what any init container costs a pod on this node), and with injection,
// with the admission latency and call count the API server itself measured
// for the kvinject webhook. It writes its section of docs/benchmarks.md.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/test/e2e/harness"

	"github.com/kvinject/kvinject/internal/testkit/k8stest"
)

const (
	ns          = "bench-scale"
	webhookName = "pods.kvinject.io"
)

func main() {
	replicas := flag.Int("replicas", 50, "replicas to scale to")
	rounds := flag.Int("rounds", 2, "rounds of each mode, interleaved")
	out := flag.String("o", "docs/benchmarks.md", "file whose scale (or storm) section is rewritten")
	storm := flag.Bool("storm", false, "run the storm instead: -storm-replicas pods through the cache, a webhook and a cache replica killed mid-rollout, beside the no-op init control")
	stormReplicas := flag.Int("storm-replicas", 100, "replicas of the storm (fewer when the node has no room for them)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	if *storm {
		*replicas, *rounds = *stormReplicas, 0
	}
	if err := run(ctx, *replicas, *rounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

type result struct {
	mode     string
	duration time.Duration
	webhook  latency // zero without injection
}

type latency struct {
	count      float64
	mean, p99  time.Duration
	p99Bounded bool
}

func run(ctx context.Context, replicas, rounds int, out string) error {
	root, err := k8stest.FindRoot()
	if err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(harness.StateDir(root), "bench-scale.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	env, err := harness.Up(ctx, root, "bench", []harness.Subject{{Namespace: ns, ServiceAccount: "dbreader"}}, log, func(name string, d time.Duration) {
		fmt.Printf("scale: %s (%s)\n", name, d.Round(100*time.Millisecond))
	})
	if err != nil {
		return err
	}
	c := env.Cluster
	if err := c.AppNamespace(ctx, ns, nil, env.Emulator); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "dbreader", Namespace: ns,
		Annotations: map[string]string{spec.SAAnnotationClientID: harness.ClientID}}}
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if rounds == 0 { // the storm
		res, err := runStorm(ctx, env, replicas)
		if err != nil {
			return err
		}
		section := stormSection(res)
		fmt.Print(section)
		return replaceSection(filepath.Join(root, out), "storm", section)
	}
	var results []result
	for r := 0; r < rounds; r++ {
		for _, m := range modes {
			res, err := scaleOnce(ctx, c, env.AppImage, m, replicas)
			if err != nil {
				return err
			}
			fmt.Printf("scale: round %d %s: %s, webhook %+v\n", r+1, res.mode, res.duration.Round(10*time.Millisecond), res.webhook)
			results = append(results, res)
		}
	}
	return writeSection(filepath.Join(root, out), replicas, results)
}

// The modes, in the order each round runs them.
const (
	modePlain    = "without injection"
	modeNoopInit = "no-op init container"
	modeInjected = "with injection"
)

var modes = []string{modePlain, modeNoopInit, modeInjected}

func deployment(image, mode string) *appsv1.Deployment {
	name := "plain"
	podLabels := map[string]string{"app": "scale-plain"}
	ann := map[string]string{}
	// Without injection there are no files: the app reads its own binary.
	command := []string{"/dbreader", "-dir", "/", "-files", "dbreader"}
	var inits []corev1.Container
	switch mode {
	case modeNoopInit:
		name = "noop-init"
		podLabels = map[string]string{"app": "scale-noop-init"}
		inits = []corev1.Container{{
			Name: "noop", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/dbreader", "-dir", "/", "-files", "dbreader", "-once"},
		}}
	case modeInjected:
		command = nil
		name = "injected"
		podLabels = map[string]string{"app": "scale-injected", spec.LabelInject: "true"}
		ann = map[string]string{
			spec.AnnotationVault:                     harness.Vault,
			spec.AnnotationSecretPrefix + "username": harness.DBSecret + "#username",
			spec.AnnotationSecretPrefix + "password": harness.DBSecret + "#password",
		}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": podLabels["app"]}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: ann},
				Spec: corev1.PodSpec{
					ServiceAccountName:            "dbreader",
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					InitContainers:                inits,
					Containers: []corev1.Container{{
						Name: "app", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
						Command: command,
					}},
				},
			},
		},
	}
}

// scaleOnce scales a fresh Deployment from 0 to n and back.
func scaleOnce(ctx context.Context, c *harness.Cluster, image, mode string, n int) (result, error) {
	d := deployment(image, mode)
	res := result{mode: mode}
	apps := c.Client.AppsV1().Deployments(ns)
	if err := apps.Delete(ctx, d.Name, metav1.DeleteOptions{}); err == nil {
		if err := waitPods(ctx, c, d.Spec.Selector.MatchLabels["app"], 0); err != nil {
			return res, err
		}
	}
	if _, err := apps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return res, err
	}
	before, err := webhookHistogram(ctx, c)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if _, err := c.KubectlOut(ctx, nil, "-n", ns, "scale", "deployment/"+d.Name, "--replicas="+strconv.Itoa(n)); err != nil {
		return res, err
	}
	if err := waitPods(ctx, c, d.Spec.Selector.MatchLabels["app"], n); err != nil {
		return res, err
	}
	res.duration = time.Since(start)
	after, err := webhookHistogram(ctx, c)
	if err != nil {
		return res, err
	}
	res.webhook = after.minus(before).latency()
	if err := apps.Delete(ctx, d.Name, metav1.DeleteOptions{}); err != nil {
		return res, err
	}
	return res, waitPods(ctx, c, d.Spec.Selector.MatchLabels["app"], 0)
}

// waitPods waits until exactly n pods of the app exist and all run ready.
func waitPods(ctx context.Context, c *harness.Cluster, app string, n int) error {
	// 5 minutes, or 5 s a pod for larger scales (the storm's control on a busy node).
	limit := max(5*time.Minute, time.Duration(n)*5*time.Second)
	deadline := time.Now().Add(limit)
	for {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running++
			}
		}
		if len(list.Items) == n && running == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d pods, %d running after %s, want %d", app, len(list.Items), running, limit, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// histogram is apiserver_admission_webhook_admission_duration_seconds for
// the kvinject webhook: cumulative bucket counts by upper bound.
type histogram struct {
	buckets    map[float64]float64
	sum, count float64
}

func (h histogram) minus(o histogram) histogram {
	d := histogram{buckets: map[float64]float64{}, sum: h.sum - o.sum, count: h.count - o.count}
	for le, v := range h.buckets {
		d.buckets[le] = v - o.buckets[le]
	}
	return d
}

func (h histogram) latency() latency {
	if h.count == 0 {
		return latency{}
	}
	l := latency{count: h.count, mean: time.Duration(h.sum / h.count * float64(time.Second))}
	bounds := make([]float64, 0, len(h.buckets))
	for le := range h.buckets {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	for _, le := range bounds {
		if h.buckets[le] >= 0.99*h.count {
			if !math.IsInf(le, 1) {
				l.p99, l.p99Bounded = time.Duration(le*float64(time.Second)), true
			}
			break
		}
	}
	return l
}

// webhookHistogram scrapes the API server's own measurement of the webhook.
func webhookHistogram(ctx context.Context, c *harness.Cluster) (histogram, error) {
	b, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return histogram{}, fmt.Errorf("scrape the API server: %w", err)
	}
	h := histogram{buckets: map[float64]float64{}}
	const metric = "apiserver_admission_webhook_admission_duration_seconds"
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) || !strings.Contains(line, `name="`+webhookName+`"`) || !strings.Contains(line, `operation="CREATE"`) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, metric+"_bucket"):
			le := between(line, `le="`, `"`)
			bound, err := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				bound, err = math.Inf(1), nil
			}
			if err == nil {
				h.buckets[bound] += v
			}
		case strings.HasPrefix(line, metric+"_sum"):
			h.sum += v
		case strings.HasPrefix(line, metric+"_count"):
			h.count += v
		}
	}
	return h, sc.Err()
}

func between(s, open, close string) string {
	_, rest, ok := strings.Cut(s, open)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, close)
	return v
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func writeSection(path string, replicas int, results []result) error {
	byMode := map[string][]time.Duration{}
	var means []time.Duration
	var p99 time.Duration
	admissions := 0.0
	for _, r := range results {
		byMode[r.mode] = append(byMode[r.mode], r.duration)
		// Only injected rounds: a pod of the previous round's injected
		// Deployment, created while it is deleted, can land in another's.
		if r.mode == modeInjected {
			means = append(means, r.webhook.mean)
			admissions += r.webhook.count
			if r.webhook.p99Bounded && r.webhook.p99 > p99 {
				p99 = r.webhook.p99
			}
		}
	}
	plain, noop, injected := median(byMode[modePlain]), median(byMode[modeNoopInit]), median(byMode[modeInjected])
	host, _ := os.Hostname()
	var b strings.Builder
	fmt.Fprintf(&b, "## Scale: a Deployment from 0 to %d replicas on the local cluster\n\n", replicas)
	fmt.Fprintf(&b, "Measured %s on %s (one node: kubelet, containerd, %d CPUs), median of %d rounds per mode, interleaved.\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, cpus(), len(results)/len(modes))
	b.WriteString("Every injected pod runs the agent: a token exchange and one Key Vault read through the emulator, before its app starts. ")
	b.WriteString("The control gives each pod a no-op init container (the app image, reading one file and exiting), so that what any init container costs a pod on this node is apart from what kvinject adds.\n\n")
	b.WriteString("| mode | time until all Running | per pod | vs. no-op init control |\n|---|---|---|---|\n")
	for _, m := range []struct {
		name string
		d    time.Duration
	}{{modePlain, plain}, {modeNoopInit, noop}, {modeInjected, injected}} {
		ratio := ""
		if noop > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(m.d)/float64(noop))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", m.name, m.d.Round(10*time.Millisecond), (m.d / time.Duration(replicas)).Round(time.Millisecond), ratio)
	}
	if noop > 0 {
		r := float64(injected) / float64(noop)
		verdict := "met"
		if r > 1.15 {
			verdict = fmt.Sprintf("missed by %.0f%%", (r/1.15-1)*100)
		}
		fmt.Fprintf(&b, "\nTarget: with injection at most 1.15x the no-op init control: %.2fx, %s.\n", r, verdict)
	}
	perPod := 0.0
	if n := replicas * len(means); n > 0 {
		perPod = admissions / float64(n)
	}
	fmt.Fprintf(&b, "\nAdmission latency the API server measured for the webhook (`apiserver_admission_webhook_admission_duration_seconds`, %.0f calls for %d injected pods: %.2f per pod), queueing on the busy node included: mean %s, p99 at most %s (histogram bucket bound).\n",
		admissions, replicas*len(means), perPod, median(means).Round(10*time.Microsecond), p99)
	return replaceSection(path, "scale", b.String())
}

func cpus() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}

// replaceSection rewrites the text between <!-- NAME:begin --> and
// <!-- NAME:end --> in path, appending the section when it is missing.
func replaceSection(path, name, body string) error {
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	section := begin + "\n" + body + end
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + section + s[j+len(end):]
	} else {
		if s != "" && !strings.HasSuffix(s, "\n\n") {
			s += "\n"
		}
		s += section + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
