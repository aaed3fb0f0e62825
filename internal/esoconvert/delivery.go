package esoconvert

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kvinject/kvinject/internal/entrypoint"
	"github.com/kvinject/kvinject/internal/spec"
)

// EntrypointResolver reads images' ENTRYPOINT and CMD from their
// registries: *entrypoint.Client.
type EntrypointResolver interface {
	ResolveEach(ctx context.Context, reqs []entrypoint.Request) ([]entrypoint.Annotation, []error)
}

// mayWrap says whether the webhook may deliver env variables through the
// exec wrapper: below EnvFiles, or when the version is not known.
func (o Options) mayWrap() bool {
	return o.KubeMinor == 0 || o.KubeMinor < spec.MinEnvFilesMinor
}

// needsEntrypoint: the wrapper runs a container's command when it has one,
// else its image's ENTRYPOINT, which the pod must then name.
func (c EnvContainer) needsEntrypoint() bool { return !c.Command }

// ResolveEntrypoints reads, for every container the exec wrapper may run
// and that has no command, its image's ENTRYPOINT (and CMD, unless the
// container has args) and adds the kvinject.io/entrypoint- annotation to
// its move. The error joins one per container whose image could not be
// read, naming the workload and the container.
func ResolveEntrypoints(ctx context.Context, res *Result, o Options, r EntrypointResolver) error {
	if !o.mayWrap() {
		return nil
	}
	type where struct{ move, container int }
	var reqs []entrypoint.Request
	var at []where
	for i, m := range res.Moves {
		for j, c := range m.EnvContainers {
			if c.needsEntrypoint() {
				reqs = append(reqs, entrypoint.Request{Image: c.Image, Container: c.Name, EntrypointOnly: c.Args})
				at = append(at, where{i, j})
			}
		}
	}
	if len(reqs) == 0 {
		return nil
	}
	anns, errs := r.ResolveEach(ctx, reqs)
	var out []error
	for k, a := range anns {
		m := &res.Moves[at[k].move]
		c := &m.EnvContainers[at[k].container]
		if errs[k] != nil {
			out = append(out, fmt.Errorf("%s container %s: %w", m.Workload, c.Name, errs[k]))
			continue
		}
		c.Entrypoint, c.EntrypointFrom = a.Value(), a.Platform+" "+a.Digest
		m.Annotations[a.Key()] = a.Value()
	}
	return errors.Join(out...)
}

// envDeliveryNotes say how the webhook delivers a move's env variables
// and what the exec wrapper needs.
func envDeliveryNotes(m Move, o Options) []string {
	if len(m.EnvContainers) == 0 {
		return nil
	}
	names := make([]string, len(m.EnvContainers))
	for i, c := range m.EnvContainers {
		names[i] = c.Name
	}
	wrapped := "container " + names[0]
	if len(names) > 1 {
		wrapped = "containers " + strings.Join(names, ", ")
	}
	var notes []string
	switch {
	case o.KubeMinor == 0:
		notes = append(notes, fmt.Sprintf("env variables: the webhook adds valueFrom.fileKeyRef entries where they cannot be dropped (EnvFiles on, Kubernetes 1.%d or newer, every kubelet too), else it makes the exec wrapper kvinject-exec the command of %s, which sets them and execs the container's own program; either way the app stays as it is (--kube-version decides for your cluster)",
			spec.MinEnvFilesMinor, wrapped))
	case o.KubeMinor < spec.MinEnvFilesMinor:
		notes = append(notes, fmt.Sprintf("env variables on Kubernetes 1.%d (no EnvFiles before 1.%d): the app stays as it is; the webhook makes the exec wrapper kvinject-exec the command of %s, which sets them and execs the container's own program (same PID, signals and exit code)",
			o.KubeMinor, spec.MinEnvFilesMinor, wrapped))
	default:
		return []string{fmt.Sprintf("env variables on Kubernetes 1.%d: the app stays as it is; the webhook adds valueFrom.fileKeyRef entries for them (EnvFiles), unless a kubelet older than 1.%d is in the cluster, where it uses the exec wrapper kvinject-exec instead (then see --kube-version 1.%d)",
			o.KubeMinor, spec.MinEnvFilesMinor, spec.MinEnvFilesMinor-1)}
	}
	for _, c := range m.EnvContainers {
		if !c.needsEntrypoint() {
			continue
		}
		what, flags := "ENTRYPOINT and CMD", ""
		if c.Args {
			what, flags = "ENTRYPOINT (its args follow)", " --entrypoint-only"
		}
		key := entrypoint.AnnotationPrefix + c.Name
		if c.Entrypoint != "" {
			notes = append(notes, fmt.Sprintf("container %s has no command: %s above is its image's %s, read from %s (%s)", c.Name, key, what, c.Image, c.EntrypointFrom))
			continue
		}
		notes = append(notes, fmt.Sprintf("container %s has no command: the wrapper needs %s, its image's %s; print it with: kvinject entrypoint --container %s%s %s (or run convert-eso with --resolve-entrypoints)",
			c.Name, key, what, c.Name, flags, orPlaceholder(c.Image, "IMAGE")))
	}
	return notes
}
