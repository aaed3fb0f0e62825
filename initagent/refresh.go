package initagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/residency"
	"github.com/kvinject/kvinject/internal/spec"
)

// Refresh bounds.
const (
	// refreshJitter spreads refreshes by up to this fraction of the
	// interval either way, so a Deployment's pods do not read in step.
	refreshJitter = 0.1
	// firstRetry is the wait after a first failed refresh; it doubles up to
	// the interval.
	firstRetry = 10 * time.Second
)

// Refresh keeps the files current until ctx ends: every interval (give or
// take refreshJitter) it reads the latest version of each secret that is
// not pinned to a version and, when one changed, writes the whole set again
// through the atomic ..data switch. A pinned secret is read once. A failed
// refresh leaves the files as they are, is reported once per outage (the
// agent's problem lines), and is retried with backoff, honouring
// Retry-After; the recovery is logged once. Ending ctx (SIGTERM) returns
// nil at once and never writes. A refresh step that has not returned
// shortly after the refresh's time limit (see watch) is a problem line and
// ErrFailed: the caller exits, which stops the step, and the kubelet
// restarts the sidecar.
//
// The first read happens one interval after start: kvinject-agent has just
// written the files. Until a refresh knows the versions, it compares what
// it would write with what the files hold.
func (a *Agent) Refresh(ctx context.Context, interval time.Duration) error {
	// The webhook asks for spec.MinRefresh or more; shorter intervals are
	// for trying the agent by hand.
	if interval < time.Second {
		return fmt.Errorf("refresh interval %v is shorter than 1s", interval)
	}
	o := a.o
	a.fetchLogV = 1
	ids := o.Spec.SecretIDs()
	pinned := 0
	for _, id := range ids {
		if id.Version != "" {
			pinned++
		}
	}
	kv := []any{"interval", interval.String(), "secrets", len(ids), "pinned", pinned,
		"vaults", hosts(distinctVaults(ids)), "clientID", a.identity.ClientID, "dir", o.Dir}
	if len(o.Spec.Env) > 0 {
		// The kubelet reads env variables when a container starts: a new
		// version reaches them only when the container restarts.
		names := make([]string, len(o.Spec.Env))
		for i, e := range o.Spec.Env {
			names[i] = e.Name
		}
		kv = append(kv, "envOnlyAtContainerStart", names)
	}
	o.Logger.Info("refreshing", kv...)

	r := &refresher{a: a, ids: ids, known: map[spec.SecretID]keyvault.Secret{}}
	defer func() { r.c.close() }()
	wait := jittered(interval)
	failures := 0
	var outage time.Time
	for {
		// Asleep until the next refresh: give back the executable's
		// pages this one touched (mapped back from the page cache when
		// the next one runs).
		if _, err := residency.ReleaseExecutable(); err != nil {
			o.Logger.V(1).Info("cannot release the executable's pages", "error", err.Error())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			o.Logger.Info("stopping", "reason", context.Cause(ctx).Error())
			return nil
		case <-t.C:
		}
		cycle, cancel := context.WithTimeout(ctx, o.Timeout)
		var res cycleResult
		err := watch(cycle, &a.steps, o.Timeout, func() error { res = r.once(cycle); return nil })
		cancel()
		if stuck := (*StuckError)(nil); errors.As(err, &stuck) {
			// The step runs on and cannot be stopped: exit, and the
			// kubelet restarts the sidecar; the files stay as they are.
			a.say([]keyvault.Problem{stuck.problem("the refresh")})
			o.Logger.Info("exiting: a refresh step did not stop at its time limit", "step", stuck.Step)
			return ErrFailed
		}
		// Hand what the refresh allocated back to the kernel now, not after
		// the runtime's scavenger gets to it: the sidecar idles at its
		// smallest.
		debug.FreeOSMemory()
		if ctx.Err() != nil {
			continue // stopping: said above, nothing written
		}
		if len(res.problems) > 0 {
			failures++
			wait = max(backoff(failures, interval), res.retryAfter)
			if outage.IsZero() {
				outage = o.Now()
				a.say(res.problems)
				o.Logger.Info("refresh failed: the files stay as they are", "problems", len(res.problems), "retryIn", wait.Round(time.Second).String())
			} else {
				o.Logger.V(1).Info("refresh failed again", "attempt", failures, "retryIn", wait.Round(time.Second).String())
			}
			continue
		}
		if !outage.IsZero() {
			o.Logger.Info("refresh recovered", "after", o.Now().Sub(outage).Round(time.Second).String(), "attempts", failures)
			outage = time.Time{}
		}
		failures = 0
		wait = jittered(interval)
		if res.wrote {
			o.Logger.Info("wrote files", "dir", o.Dir, "files", len(o.Spec.Files), "changed", res.changed)
		}
	}
}

// refresher is the refresh loop's state between cycles.
type refresher struct {
	a   *Agent
	ids []spec.SecretID
	c   *conn
	// known is the last set of secrets the files were checked or written
	// against; the values stay in memory to render the files again when
	// only one secret changes.
	known map[spec.SecretID]keyvault.Secret
	// verified says the files on disk were found to match known.
	verified bool
}

type cycleResult struct {
	problems   []keyvault.Problem
	retryAfter time.Duration
	wrote      bool
	changed    []string // secrets with a new version
}

// once is one refresh: read, compare, write when something changed.
func (r *refresher) once(ctx context.Context) cycleResult {
	a := r.a
	if r.c == nil {
		c, problems, err := a.connect(ctx, r.ids)
		if err != nil {
			problems = append(problems, keyvault.Problem{Cause: firstLine(err.Error())})
		}
		if len(problems) > 0 {
			c.close()
			return cycleResult{problems: problems}
		}
		r.c = c
	}
	// Idle connections would wake the sidecar for keep-alives until the
	// next refresh; a TLS session ticket makes the next handshake short.
	defer r.c.closeIdle()

	var toRead []spec.SecretID
	for _, id := range r.ids {
		if _, ok := r.known[id]; id.Version == "" || !ok {
			toRead = append(toRead, id)
		}
	}
	results, problems := a.read(ctx, r.c, toRead, false)
	if len(problems) > 0 {
		return cycleResult{problems: problems, retryAfter: retryAfter(results)}
	}
	var changed []string
	all := make(map[spec.SecretID]*fetchResult, len(r.ids))
	for _, id := range r.ids {
		if res, ok := results[id]; ok {
			if old, ok := r.known[id]; !ok || old.Version != res.secret.Version {
				changed = append(changed, keyvault.Label(id))
			}
			all[id] = res
			continue
		}
		all[id] = &fetchResult{secret: r.known[id], at: &keyvault.Attempts{}}
	}
	if older := olderThanDisk(r.ids, results, readVersions(a.o.Dir)); len(older) > 0 {
		// Another cache replica, or a cache behind a direct read, still
		// holds a rotated-out version: keep the whole set, ask again at
		// the next interval.
		for _, o := range older {
			a.o.Logger.Info("kept the files: the answer's version is older than the one they hold",
				"vault", keyvault.Host(o.id.Vault), "name", o.id.Name,
				"version", o.got.Version, "created", o.got.Created.UTC().Format(time.RFC3339),
				"versionOnDisk", o.onDisk.Version, "createdOnDisk", o.diskCreated.UTC().Format(time.RFC3339))
		}
		return cycleResult{}
	}
	if len(changed) == 0 && r.verified {
		return cycleResult{}
	}
	files, problems := a.resolve(ctx, all)
	if len(problems) > 0 {
		return cycleResult{problems: problems}
	}
	if ctx.Err() != nil {
		return cycleResult{} // stopping: never write
	}
	keep := func() {
		for id, res := range all {
			r.known[id] = res.secret
		}
		r.verified = true
	}
	a.steps.enter("writing the files")
	if same, err := filesHold(a.o.Dir, files); err == nil && same {
		keep() // a new version with the same value, or the agent's own set
		return cycleResult{}
	}
	var ch setChange
	if a.o.Spec.OnChange != nil {
		ch = diffSet(a.o.Dir, files, envNames(a.o.Spec))
	}
	if _, err := writeSet(a.o.Dir, files, encodeVersions(r.ids, all), a.o.Now()); err != nil {
		return cycleResult{problems: []keyvault.Problem{writeProblem(a.o.Dir, err)}}
	}
	keep()
	// After the switch: the containers find the new set.
	a.actOnChange(ch)
	return cycleResult{wrote: true, changed: changed}
}

// say prints problem lines on the container log only: a running sidecar has
// no termination message.
func (a *Agent) say(problems []keyvault.Problem) {
	var b strings.Builder
	for _, p := range problems {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	_, _ = fmt.Fprint(a.o.Err, b.String())
}

func (c *conn) closeIdle() {
	if c == nil {
		return
	}
	if c.az != nil {
		c.az.CloseIdle()
	}
	if c.cache != nil {
		c.cache.CloseIdle()
	}
}

// filesHold says whether dir already holds exactly files, contents and
// modes.
func filesHold(dir string, files []FileData) (bool, error) {
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		st, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		if st.Mode().Perm() != f.Mode.Perm() {
			return false, nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return false, err
		}
		if !bytes.Equal(b, f.Data) {
			return false, nil
		}
	}
	return true, nil
}

// jittered is d give or take refreshJitter.
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + refreshJitter*(2*rand.Float64()-1)))
}

// backoff is the wait after the n-th failure in a row: firstRetry doubling,
// at most the interval, jittered.
func backoff(n int, interval time.Duration) time.Duration {
	d := firstRetry
	for i := 1; i < n && d < interval; i++ {
		d *= 2
	}
	return jittered(min(d, interval))
}

// retryAfter is the longest Retry-After (seconds) among failed reads.
func retryAfter(results map[spec.SecretID]*fetchResult) time.Duration {
	var longest time.Duration
	for _, r := range results {
		var re *azcore.ResponseError
		if r.err == nil || !errors.As(r.err, &re) || re.RawResponse == nil {
			continue
		}
		if s, err := strconv.Atoi(re.RawResponse.Header.Get("Retry-After")); err == nil && s > 0 {
			longest = max(longest, time.Duration(s)*time.Second)
		}
	}
	return longest
}
