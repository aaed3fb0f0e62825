package webhook

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/internal/spec"
)

// A resource setting of an injected container: a request or a limit of CPU
// or memory. The webhook's flags and the pod annotations name them alike:
// --agent-cpu-request and kvinject.io/agent-cpu-request.
type resourceSetting struct {
	resource corev1.ResourceName
	limit    bool
}

var resourceSettings = []resourceSetting{
	{corev1.ResourceCPU, false}, {corev1.ResourceCPU, true},
	{corev1.ResourceMemory, false}, {corev1.ResourceMemory, true},
}

// suffix is the setting's name after the container's prefix: "cpu-request".
func (r resourceSetting) suffix() string {
	if r.limit {
		return string(r.resource) + "-limit"
	}
	return string(r.resource) + "-request"
}

func (r resourceSetting) list(req *corev1.ResourceRequirements) *corev1.ResourceList {
	if r.limit {
		return &req.Limits
	}
	return &req.Requests
}

// Set sets the setting in req.
func (r resourceSetting) set(req *corev1.ResourceRequirements, q resource.Quantity) {
	l := r.list(req)
	if *l == nil {
		*l = corev1.ResourceList{}
	}
	(*l)[r.resource] = q
}

// resourceAnnotations are the per-pod resource annotations, all known to
// parse; built once, as admission reads them for every annotation.
var resourceAnnotations = func() []string {
	var names []string
	for _, prefix := range []string{spec.AnnotationAgentResourcePrefix, spec.AnnotationRefreshResourcePrefix} {
		for _, r := range resourceSettings {
			names = append(names, prefix+r.suffix())
		}
	}
	return names
}()

// ResourceFlag is the flag setting one of the injected containers' requests
// or limits: container "agent" or "refresh", resource "cpu" or "memory",
// kind "request" or "limit". Set returns the function that sets it in o.
type ResourceFlag struct {
	Name  string
	Usage string
	Set   func(o *Options, value string) error
}

// ResourceFlags are the flags of the agent's and the refresh sidecar's
// requests and limits (--agent-cpu-request ...) and of the bounds of the
// per-pod annotations (--max-injected-cpu, --max-injected-memory).
func ResourceFlags(defaults Options) []ResourceFlag {
	var flags []ResourceFlag
	for _, c := range []struct {
		name, what string
		req        func(o *Options) *corev1.ResourceRequirements
	}{
		{"agent", "the kvinject-agent init container", func(o *Options) *corev1.ResourceRequirements { return &o.AgentResources }},
		{"refresh", "the kvinject-refresh sidecar", func(o *Options) *corev1.ResourceRequirements { return &o.RefreshResources }},
	} {
		for _, r := range resourceSettings {
			def := (*r.list(c.req(&defaults)))[r.resource]
			flags = append(flags, ResourceFlag{
				Name:  c.name + "-" + r.suffix(),
				Usage: fmt.Sprintf("%s %s of %s (default %s)", r.resource, map[bool]string{false: "request", true: "limit"}[r.limit], c.what, def.String()),
				Set: func(o *Options, v string) error {
					q, err := resource.ParseQuantity(v)
					if err != nil {
						return err
					}
					r.set(c.req(o), q)
					return nil
				},
			})
		}
	}
	for _, m := range []struct {
		res corev1.ResourceName
		max func(o *Options) *resource.Quantity
	}{
		{corev1.ResourceCPU, func(o *Options) *resource.Quantity { return &o.MaxInjectedCPU }},
		{corev1.ResourceMemory, func(o *Options) *resource.Quantity { return &o.MaxInjectedMemory }},
	} {
		flags = append(flags, ResourceFlag{
			Name: "max-injected-" + string(m.res),
			Usage: fmt.Sprintf("the largest %s request or limit a pod may give the agent or the refresh sidecar with %s%s-... annotations (default: none, the annotations are denied)",
				m.res, spec.AnnotationAgentResourcePrefix, m.res),
			Set: func(o *Options, v string) error {
				q, err := resource.ParseQuantity(v)
				if err != nil {
					return err
				}
				*m.max(o) = q
				return nil
			},
		})
	}
	return flags
}

// validateResources checks the injected containers' requests and limits.
func (o *Options) validateResources() []error {
	var errs []error
	for _, c := range []struct {
		name string
		req  corev1.ResourceRequirements
	}{{"agent", o.AgentResources}, {"refresh", o.RefreshResources}} {
		for _, r := range resourceSettings {
			if q, ok := (*r.list(&c.req))[r.resource]; ok && q.Sign() <= 0 {
				errs = append(errs, fmt.Errorf("--%s-%s: %s must be positive", c.name, r.suffix(), q.String()))
			}
		}
		if err := requestsWithinLimits(c.req); err != nil {
			errs = append(errs, fmt.Errorf("the %s's resources: %w", c.name, err))
		}
	}
	for _, m := range []struct {
		name string
		q    resource.Quantity
	}{{"cpu", o.MaxInjectedCPU}, {"memory", o.MaxInjectedMemory}} {
		if m.q.Sign() < 0 {
			errs = append(errs, fmt.Errorf("--max-injected-%s: %s must not be negative", m.name, m.q.String()))
		}
	}
	return errs
}

// requestsWithinLimits says which request exceeds its limit.
func requestsWithinLimits(req corev1.ResourceRequirements) error {
	var errs []error
	for name, q := range req.Requests {
		if l, ok := req.Limits[name]; ok && q.Cmp(l) > 0 {
			errs = append(errs, fmt.Errorf("the %s request %s is above the limit %s", name, q.String(), l.String()))
		}
	}
	return errors.Join(errs...)
}

// parseResources reads the pod's resource annotations over the webhook's
// defaults: the agent's and the refresh sidecar's requirements.
func parseResources(ann map[string]string, o *Options, d *Denial) (agent, refresh corev1.ResourceRequirements) {
	agent, refresh = *o.AgentResources.DeepCopy(), *o.RefreshResources.DeepCopy()
	for _, c := range []struct {
		prefix string
		req    *corev1.ResourceRequirements
	}{{spec.AnnotationAgentResourcePrefix, &agent}, {spec.AnnotationRefreshResourcePrefix, &refresh}} {
		set := map[resourceSetting]bool{}
		for _, r := range resourceSettings {
			key := c.prefix + r.suffix()
			v, ok := ann[key]
			if !ok {
				continue
			}
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				d.addf("%s: %s is not a positive quantity: use one like 100m (CPU) or 64Mi (memory)", key, spec.Quote(v))
				continue
			}
			maxQ := o.MaxInjectedCPU
			flag := "--max-injected-cpu"
			if r.resource == corev1.ResourceMemory {
				maxQ, flag = o.MaxInjectedMemory, "--max-injected-memory"
			}
			switch {
			case maxQ.IsZero():
				d.addf("%s: the webhook allows no per-pod %s (its %s is not set): remove the annotation, or ask the cluster's admins", key, r.resource, flag)
				continue
			case q.Cmp(maxQ) > 0:
				d.addf("%s: %s is above the most the webhook allows, %s (%s)", key, spec.Quote(v), maxQ.String(), flag)
				continue
			}
			r.set(c.req, q)
			set[r] = true
		}
		checkRequestsWithinLimits(c.prefix, *c.req, set, d)
	}
	return agent, refresh
}

// checkRequestsWithinLimits denies a request above its limit where the pod's
// annotations (set) made it so, naming the annotation the pod set and the
// one to set with it.
func checkRequestsWithinLimits(prefix string, req corev1.ResourceRequirements, set map[resourceSetting]bool, d *Denial) {
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		q, hasReq := req.Requests[res]
		l, hasLimit := req.Limits[res]
		if !hasReq || !hasLimit || q.Cmp(l) <= 0 {
			continue
		}
		podRequest, podLimit := set[resourceSetting{res, false}], set[resourceSetting{res, true}]
		switch {
		case podRequest && podLimit:
			d.addf("%s%s-request: %s is above %s%s-limit, %s", prefix, res, q.String(), prefix, res, l.String())
		case podRequest:
			d.addf("%s%s-request: %s is above the %s limit %s: set %s%s-limit too", prefix, res, q.String(), res, l.String(), prefix, res)
		case podLimit:
			d.addf("%s%s-limit: %s is below the %s request %s: set %s%s-request too", prefix, res, l.String(), res, q.String(), prefix, res)
		}
	}
}
