package webhookserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/webhook"
)

// EnvFilesInterval is how often the webhook asks the API server again
// whether its EnvFiles gate is on.
const EnvFilesInterval = 3 * time.Minute

// maxMetricsBytes bounds what the webhook reads of the API server's
// /metrics: the feature gate lines come early, and a large server's whole
// output is tens of MiB.
const maxMetricsBytes = 64 << 20

// updateOptions swaps in f's copy of the current options, again if another
// writer swapped first (the cache CA watcher and the cluster watcher).
func updateOptions(p *atomic.Pointer[webhook.Options], f func(*webhook.Options) (*webhook.Options, error)) error {
	for {
		cur := p.Load()
		next, err := f(cur)
		if err != nil {
			return err
		}
		if p.CompareAndSwap(cur, next) {
			return nil
		}
	}
}

// EnvFilesEnabled reads the API server's kubernetes_feature_enabled metric
// for EnvFiles: the least privilege that proves the gate (get on the
// non-resource URL /metrics). Not listed: the gate does not exist there.
func EnvFilesEnabled(ctx context.Context, cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	rc := dc.RESTClient()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := rc.Get().AbsPath("/metrics").Stream(ctx)
	if err != nil {
		return false, fmt.Errorf("read the API server's /metrics (the webhook's ClusterRole needs get on it): %w", err)
	}
	defer body.Close()
	return envFilesInMetrics(io.LimitReader(body, maxMetricsBytes))
}

// envFilesInMetrics finds kubernetes_feature_enabled{name="EnvFiles",...} in
// Prometheus text.
func envFilesInMetrics(r io.Reader) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kubernetes_feature_enabled{") || !strings.Contains(line, `name="EnvFiles"`) {
			continue
		}
		fields := strings.Fields(line)
		return fields[len(fields)-1] == "1", nil
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, nil
}

// oldKubelets are the nodes whose kubelet is older than 1.MinEnvFilesMinor.
func oldKubelets(nodes []corev1.Node) []string {
	var old []string
	for _, n := range nodes {
		minor, err := webhook.KubeMinor(n.Status.NodeInfo.KubeletVersion)
		if err != nil || minor < spec.MinEnvFilesMinor {
			old = append(old, n.Name)
		}
	}
	slices.Sort(old)
	return old
}

// stripNode keeps of a Node what the webhook reads: its name and kubelet
// version.
func stripNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion, UID: n.UID},
		Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: n.Status.NodeInfo.KubeletVersion}},
	}, nil
}

// ClusterWatcher keeps the options' Cluster current for the auto env
// delivery: Nodes watched, the EnvFiles gate asked every EnvFilesInterval.
type ClusterWatcher struct {
	Options *atomic.Pointer[webhook.Options]
	Nodes   client.Reader
	// EnvFiles asks the API server (EnvFilesEnabled).
	EnvFiles func(context.Context) (bool, error)
	Interval time.Duration

	envFiles atomic.Bool
	known    atomic.Bool
	kick     chan struct{}
}

// ReadyChecker fails until the first look at the cluster, so that no pod
// is admitted on a guess made before it.
func (w *ClusterWatcher) ReadyChecker(*http.Request) error {
	if !w.known.Load() {
		return errors.New("the env delivery is not decided yet: Nodes and the EnvFiles gate not read")
	}
	return nil
}

// Watch registers for Node events on the informer and runs until ctx
// ends (a manager Runnable).
func (w *ClusterWatcher) Watch(informer cache.Informer) error {
	w.kick = make(chan struct{}, 1)
	kick := func(any) {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: kick, DeleteFunc: kick, UpdateFunc: func(_, n any) { kick(n) },
	})
	return err
}

// look lists the Nodes and swaps in the options for what they and the
// gate say, when that changed. A list that fails leaves the last decision
// (at first: the exec wrapper).
func (w *ClusterWatcher) look(ctx context.Context, log logr.Logger, last **webhook.Cluster) {
	// The cache's List waits for its first sync, which never comes without
	// RBAC to list Nodes.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var nodes corev1.NodeList
	if err := w.Nodes.List(lctx, &nodes); err != nil {
		if ctx.Err() == nil {
			log.Error(err, "cannot list Nodes (the webhook's ClusterRole needs list and watch on nodes): env variables keep the last delivery decided")
		}
		return
	}
	c := webhook.Cluster{EnvFiles: w.envFiles.Load(), OldKubelets: oldKubelets(nodes.Items)}
	if *last != nil && c.EnvFiles == (*last).EnvFiles && slices.Equal(c.OldKubelets, (*last).OldKubelets) {
		return
	}
	_ = updateOptions(w.Options, func(o *webhook.Options) (*webhook.Options, error) { return o.WithCluster(c), nil })
	log.Info("env delivery", "envFiles", c.EnvFiles, "oldKubelets", len(c.OldKubelets), "fileKeyRef", c.EnvFiles && len(c.OldKubelets) == 0)
	*last = &c
}

// Start implements manager.Runnable.
func (w *ClusterWatcher) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("env-delivery")
	ask := func() {
		on, err := w.EnvFiles(ctx)
		if err != nil {
			log.Error(err, "cannot tell whether the API server keeps fileKeyRef: env variables go through the exec wrapper")
		}
		w.envFiles.Store(on && err == nil)
	}
	ask()
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	var last *webhook.Cluster
	for {
		w.look(ctx, log, &last)
		w.known.Store(true)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			ask()
		case <-w.kick:
		}
	}
}
