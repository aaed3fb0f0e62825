package webhook

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// MutatePath is where the webhook serves the pod mutation.
const MutatePath = "/mutate-v1-pod"

// ServiceAccountGetter returns a pod's ServiceAccount. A ServiceAccount that
// does not exist is returned empty, not as an error: the pod's own
// annotations may still name the identity.
type ServiceAccountGetter interface {
	GetServiceAccount(ctx context.Context, namespace, name string) (ServiceAccount, error)
}

// PodInjector is the typed admission.Defaulter for pods: it looks up the
// ServiceAccount, then calls Mutate.
type PodInjector struct {
	Options         *Options
	ServiceAccounts ServiceAccountGetter
}

var _ admission.Defaulter[*corev1.Pod] = (*PodInjector)(nil)

// Default implements admission.Defaulter.
func (p *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	log := logf.FromContext(ctx)
	// Pods of a Deployment arrive without a namespace (and a name): the
	// request has it.
	ns := pod.Namespace
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		ns = req.Namespace
	}
	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	sa, err := p.ServiceAccounts.GetServiceAccount(ctx, ns, saName)
	if err != nil {
		log.Error(err, "ServiceAccount lookup failed", "namespace", ns, "serviceAccount", saName)
		return apierrors.NewInternalError(fmt.Errorf("get service account %q: %w", ns+"/"+saName, err))
	}
	if err := Mutate(pod, sa, p.Options); err != nil {
		var d *Denial
		if errors.As(err, &d) {
			log.Info("denied", "namespace", ns, "generateName", pod.GenerateName, "name", pod.Name, "problems", len(d.Problems))
		}
		return err
	}
	log.V(1).Info("injected", "namespace", ns, "generateName", pod.GenerateName, "name", pod.Name)
	return nil
}

// ClusterServiceAccounts reads ServiceAccounts' metadata from the manager's
// cache and, when the cache has not seen one yet, directly from the API
// server: a pod can arrive right after its ServiceAccount was created.
type ClusterServiceAccounts struct {
	Cache client.Reader
	Live  client.Reader
}

// GetServiceAccount implements ServiceAccountGetter.
func (c ClusterServiceAccounts) GetServiceAccount(ctx context.Context, namespace, name string) (ServiceAccount, error) {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	obj := newServiceAccountMetadata()
	err := c.Cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && c.Live != nil {
		err = c.Live.Get(ctx, key, obj)
	}
	switch {
	case apierrors.IsNotFound(err):
		return ServiceAccount{Namespace: namespace, Name: name}, nil
	case err != nil:
		return ServiceAccount{}, err
	}
	return ServiceAccount{Namespace: namespace, Name: name, Annotations: obj.Annotations}, nil
}

// newServiceAccountMetadata is what the webhook caches of ServiceAccounts:
// metadata only, since it needs nothing else.
func newServiceAccountMetadata() *metav1.PartialObjectMetadata {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return obj
}

// Results of kvinject_injections_total.
const (
	resultInjected  = "injected"
	resultUnchanged = "unchanged"
	resultDenied    = "denied"
	resultError     = "error"
)

// NewInjectionsCounter returns kvinject_injections_total, registered with reg.
func NewInjectionsCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvinject_injections_total",
		Help: "Pod admissions by result: injected, unchanged (already injected), denied (bad annotations) or error.",
	}, []string{"result"})
	for _, r := range []string{resultInjected, resultUnchanged, resultDenied, resultError} {
		c.WithLabelValues(r) // export zeros, so rates work from the start
	}
	if err := reg.Register(c); err != nil {
		// A second server in one process (tests) shares the first's counter.
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("register kvinject_injections_total: %w", err)
	}
	return c, nil
}

// NewAdmissionWebhook returns the pod mutation as a controller-runtime
// webhook: the typed Defaulter gives DELETE skipping, no-op detection and
// panic recovery; counter, when not nil, counts results.
func NewAdmissionWebhook(scheme *runtime.Scheme, injector *PodInjector, counter *prometheus.CounterVec) *admission.Webhook {
	wh := admission.WithDefaulter[*corev1.Pod](scheme, injector)
	if counter != nil {
		wh.Handler = countingHandler{next: wh.Handler, counter: counter}
	}
	return wh
}

type countingHandler struct {
	next    admission.Handler
	counter *prometheus.CounterVec
}

func (h countingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp := h.next.Handle(ctx, req)
	// A dry run has no side effects, not even on metrics; a DELETE is no admission of a pod.
	if (req.DryRun != nil && *req.DryRun) || req.Operation == admissionv1.Delete {
		return resp
	}
	result := resultInjected
	switch {
	case !resp.Allowed && resp.Result != nil && resp.Result.Code >= 500:
		result = resultError
	case !resp.Allowed:
		result = resultDenied
	case len(resp.Patches) == 0 && len(resp.Patch) == 0:
		result = resultUnchanged
	}
	h.counter.WithLabelValues(result).Inc()
	return resp
}
