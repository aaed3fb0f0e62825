package webhookserver

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
)

// Results of kvinject_injections_total.
const (
	resultInjected  = "injected"
	resultUnchanged = "unchanged"
	resultDenied    = "denied"
	resultError     = "error"
)

// Counter is kvinject_injections_total: pod admissions by result.
type Counter struct {
	vec *prometheus.CounterVec
}

// NewInjectionsCounter returns kvinject_injections_total, registered with reg.
func NewInjectionsCounter(reg prometheus.Registerer) (*Counter, error) {
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
				return &Counter{vec: existing}, nil
			}
		}
		return nil, fmt.Errorf("register kvinject_injections_total: %w", err)
	}
	return &Counter{vec: c}, nil
}

func (c *Counter) count(resp *admissionv1.AdmissionResponse) {
	result := resultInjected
	switch {
	case !resp.Allowed && resp.Result != nil && resp.Result.Code >= 500:
		result = resultError
	case !resp.Allowed:
		result = resultDenied
	case len(resp.Patch) == 0:
		result = resultUnchanged
	}
	c.vec.WithLabelValues(result).Inc()
}
