package initagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/secretform"
	"github.com/kvinject/kvinject/internal/spec"
)

// Run fetches, renders and writes. It returns nil when every file was
// written, ErrFailed when problems were reported on Options.Err (one line
// each), or another error for a broken setup.
//
// A step that has not returned shortly after the time limit (see watch) is
// one problem line naming it, and Run returns ErrFailed while the step
// still runs: the caller exits, so that the pod does not stay in Init.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	err := watch(ctx, &a.steps, a.o.Timeout, func() error { return a.run(ctx) })
	if stuck := (*StuckError)(nil); errors.As(err, &stuck) {
		return a.report([]keyvault.Problem{stuck.problem("the agent")})
	}
	return err
}

func (a *Agent) run(ctx context.Context) error {
	o := a.o
	start := time.Now()
	ids := o.Spec.SecretIDs()
	o.Logger.Info("starting", "files", len(o.Spec.Files), "secrets", len(ids), "vaults", hosts(distinctVaults(ids)),
		"clientID", a.identity.ClientID, "tenantID", a.identity.TenantID, "dir", o.Dir, "timeout", o.Timeout.String())

	c, problems, err := a.connect(ctx, ids)
	if err != nil {
		return err
	}
	defer c.close()
	if len(problems) > 0 {
		return a.report(problems)
	}
	results, problems := a.read(ctx, c, ids, true)
	// Extract and render what was read, so that one run reports every
	// problem, not just the first kind.
	files, more := a.resolve(ctx, results)
	problems = append(problems, more...)
	if len(problems) > 0 {
		return a.report(problems)
	}
	a.steps.enter("writing the files")
	// The wrapper first: the env file it reads is the last thing to appear.
	if o.Spec.EnvDelivery == spec.DeliveryExec {
		if err := installWrapper(o.ExecWrapper, o.BinDir); err != nil {
			return a.report([]keyvault.Problem{wrapperProblem(o.ExecWrapper, o.BinDir, err)})
		}
	}
	if problems := a.prepareOnChange(); len(problems) > 0 {
		return a.report(problems)
	}
	res, err := writeSet(o.Dir, files, encodeVersions(ids, results), o.Now())
	if err != nil {
		return a.report([]keyvault.Problem{writeProblem(o.Dir, err)})
	}
	for _, w := range res.Warnings {
		o.Logger.Info("cleanup after the switch failed", "problem", w)
	}
	// Count what the spec asked for: the env file is one more entry in
	// files, not a file the user named.
	kv := []any{"dir", o.Dir, "files", len(o.Spec.Files), "durationMs", time.Since(start).Milliseconds()}
	if len(o.Spec.Env) > 0 {
		kv = append(kv, "env", len(o.Spec.Env))
	}
	if c.cache != nil {
		kv = append(kv, "fromCache", a.fromCache.served, "stale", a.fromCache.stale)
	}
	if c.az != nil {
		kv = append(kv, "httpsRequests", c.az.Requests())
	}
	if rss := peakRSSKiB(); rss > 0 {
		kv = append(kv, "peakRSSKiB", rss)
	}
	o.Logger.Info("wrote files", kv...)
	return nil
}

// conn is what the agent reads the vaults through: the cache when the spec
// names one, and the Azure clients or Options.NewGetter's getters.
type conn struct {
	cache    *keyvault.CacheClient // nil without spec.Cache
	getters  map[string]keyvault.Getter
	az       *keyvault.Clients // nil until a read goes to Azure; nil with Options.NewGetter
	signedIn bool
}

func (c *conn) close() {
	if c == nil {
		return
	}
	if c.az != nil {
		c.az.Close()
	}
	if c.cache != nil {
		c.cache.CloseIdle()
	}
}

// connect checks the identity and prepares the reads of ids: the cache's
// client when the spec names one; otherwise one getter per vault, and with
// Azure the vault connections start opening. Identity problems (AZURE_*
// missing or disagreeing with the spec) and client setup failures are
// problems.
func (a *Agent) connect(ctx context.Context, ids []spec.SecretID) (*conn, []keyvault.Problem, error) {
	a.steps.enter("connecting")
	c := &conn{getters: map[string]keyvault.Getter{}}
	if a.o.NewGetter == nil {
		if ps := identityProblems(a.identity, a.o.Spec, a.o.Env); len(ps) > 0 {
			var problems []keyvault.Problem
			for _, p := range ps {
				problems = append(problems, keyvault.Problem{Cause: p})
			}
			return c, problems, nil
		}
	}
	if a.o.Spec.Cache != nil {
		cc, err := keyvault.NewCacheClient(a.o.Spec.Cache, a.identity)
		if err != nil {
			return c, []keyvault.Problem{{Cause: "cannot set up the cache's client: " + firstLine(err.Error())}}, nil
		}
		c.cache = cc
		// Azure is dialled only for what the cache cannot answer.
		return c, nil, nil
	}
	problems, err := a.direct(ctx, c, ids)
	return c, problems, err
}

// direct makes the getters for the vaults of ids that have none yet. With
// Azure it creates the clients once, for every vault of the spec, and
// starts opening the connections to the vaults of ids; failing to create
// them is a problem.
func (a *Agent) direct(ctx context.Context, c *conn, ids []spec.SecretID) ([]keyvault.Problem, error) {
	vaults := distinctVaults(ids)
	if a.o.NewGetter != nil {
		for _, v := range vaults {
			if c.getters[v] != nil {
				continue
			}
			g, err := a.o.NewGetter(v)
			if err != nil {
				return nil, err
			}
			c.getters[v] = g
		}
		return nil, nil
	}
	if c.az == nil {
		az, err := keyvault.NewClients(a.identity, a.o.Cloud, distinctVaults(a.o.Spec.SecretIDs()), a.o.Concurrency)
		if err != nil {
			return []keyvault.Problem{{Cause: "cannot set up the Azure clients: " + firstLine(err.Error())}}, nil
		}
		c.az, c.getters = az, az.Getters()
	}
	for _, v := range vaults {
		c.az.Warm(ctx, v)
	}
	return nil, nil
}

// read reads ids: from the cache first when the spec names one, the rest
// from Azure directly. signIn exchanges the token before the first direct
// read, while the vault connections open, so that a refused sign-in is one
// problem per vault rather than one per secret. Every id has a result.
func (a *Agent) read(ctx context.Context, c *conn, ids []spec.SecretID, signIn bool) (map[spec.SecretID]*fetchResult, []keyvault.Problem) {
	a.steps.enter("reading the secrets")
	results := make(map[spec.SecretID]*fetchResult, len(ids))
	toRead := ids
	if c.cache != nil {
		var problems []keyvault.Problem
		toRead, problems = a.askCache(ctx, c.cache, ids, results)
		if len(problems) > 0 {
			return results, problems
		}
	}
	if len(toRead) > 0 {
		problems, err := a.direct(ctx, c, toRead)
		if err != nil {
			problems = append(problems, keyvault.Problem{Cause: firstLine(err.Error())})
		}
		if len(problems) > 0 {
			return results, problems
		}
		if signIn && c.az != nil && !c.signedIn {
			t0 := time.Now()
			if err := c.az.SignIn(ctx); err != nil {
				return results, a.signInProblems(ctx, err, toRead)
			}
			c.signedIn = true
			a.o.Logger.Info("signed in", "authority", a.identity.AuthorityHost, "durationMs", time.Since(t0).Milliseconds())
		}
		for id, r := range a.fetch(ctx, c.getters, toRead) {
			results[id] = r
		}
	}
	return results, a.fetchProblems(ids, results)
}

// signInProblems is a failed sign-in, said once per vault it kept from
// reading.
func (a *Agent) signInProblems(ctx context.Context, err error, ids []spec.SecretID) []keyvault.Problem {
	dc := a.diagContext()
	p := dc.SignIn(err)
	if ctx.Err() != nil {
		// azidentity flattens the context's error into its message.
		p = dc.Transport(ctx.Err(), keyvault.Host(a.identity.AuthorityHost))
	}
	var problems []keyvault.Problem
	for _, v := range distinctVaults(ids) {
		q := p
		q.Vault, q.Secret = v, secretsOf(ids, v)
		problems = append(problems, q)
	}
	return problems
}

// fetchProblems diagnoses the fetches that failed, in ids' order.
func (a *Agent) fetchProblems(ids []spec.SecretID, results map[spec.SecretID]*fetchResult) []keyvault.Problem {
	dc := a.diagContext()
	var problems []keyvault.Problem
	for _, id := range ids {
		if r := results[id]; r.err != nil {
			problems = append(problems, dc.Read(id, r.err, r.at))
		}
	}
	return problems
}

func (a *Agent) diagContext() keyvault.Diagnoser {
	tokenFile := a.identity.TokenFile
	return keyvault.Diagnoser{Identity: a.identity, Timeout: a.o.Timeout, Now: a.o.Now,
		TimeLimit: "the agent's time limit", RaiseTimeout: "raise --timeout",
		Claims: func() (keyvault.TokenClaims, error) { return keyvault.ReadTokenClaims(tokenFile) }}
}

// report prints one line per problem and returns ErrFailed: in full to
// the container log, without Problem.Detail to the termination message.
func (a *Agent) report(problems []keyvault.Problem) error {
	var full, public strings.Builder
	for _, p := range problems {
		full.WriteString(p.String())
		full.WriteByte('\n')
		public.WriteString(p.Public())
		public.WriteByte('\n')
	}
	_, _ = fmt.Fprint(a.o.Err, full.String())
	if a.o.TerminationLog != "" {
		writeTerminationLog(a.o.TerminationLog, public.String())
	}
	a.o.Logger.Info("failed: no file written", "problems", len(problems))
	return ErrFailed
}

type fetchResult struct {
	secret keyvault.Secret
	err    error
	at     *keyvault.Attempts
}

// fetch reads every secret version once, at most Concurrency at a time.
func (a *Agent) fetch(ctx context.Context, getters map[string]keyvault.Getter, ids []spec.SecretID) map[spec.SecretID]*fetchResult {
	results := make(map[spec.SecretID]*fetchResult, len(ids))
	for _, id := range ids {
		results[id] = &fetchResult{at: &keyvault.Attempts{}}
	}
	sem := make(chan struct{}, a.o.Concurrency)
	var wg sync.WaitGroup
	for _, id := range ids {
		r := results[id]
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				r.err = ctx.Err()
				return
			}
			defer func() { <-sem }()
			t0 := time.Now()
			s, err := getters[id.Vault].GetSecret(keyvault.WithAttempts(ctx, r.at), id.Name, id.Version)
			if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				// The deadline ended the retries: say so, with what the
				// tries got (r.at), rather than a bare transport error.
				err = ctx.Err()
			}
			r.secret, r.err = s, err
			if err == nil {
				a.o.Logger.V(a.fetchLogV).Info("fetched secret", "vault", keyvault.Host(id.Vault), "name", id.Name,
					"version", s.Version, "bytes", len(s.Value), "durationMs", time.Since(t0).Milliseconds())
			}
		})
	}
	wg.Wait()
	return results
}

// resolve turns fetched values into file contents: properties extracted,
// templates rendered. Problems are reported once per reference.
func (a *Agent) resolve(ctx context.Context, results map[spec.SecretID]*fetchResult) ([]FileData, []keyvault.Problem) {
	a.steps.enter("extracting properties, taking certificates apart and rendering templates")
	r := &resolver{results: results, values: map[spec.Ref]extracted{}, byRef: map[spec.Ref]*keyvault.Problem{}}
	var files []FileData
	for _, f := range a.o.Spec.Files {
		if fd, ok := r.file(ctx, f); ok {
			files = append(files, fd)
		}
	}
	if len(a.o.Spec.Env) > 0 {
		if env, ok := r.envFile(a.o.Spec.Env); ok {
			// The kubelet reads the file for fileKeyRef; the app's own user
			// reads it for the exec wrapper.
			mode := fs.FileMode(0o400)
			if a.o.Spec.EnvDelivery == spec.DeliveryExec {
				mode, _ = spec.ParseMode(a.o.Spec.EnvFileMode) // validated
			}
			files = append(files, FileData{Name: spec.EnvFileName, Mode: mode, Data: env})
		}
	}
	problems := r.problems
	for _, ref := range r.order {
		problems = append(problems, *r.byRef[ref])
	}
	return files, problems
}

// extracted is what a reference selected of its secret's value.
type extracted struct {
	data []byte
	err  error
}

// resolver takes what each reference selects of the fetched values, once,
// and gathers the problems: one per reference, listing every file or env
// variable it kept from being written.
type resolver struct {
	results  map[spec.SecretID]*fetchResult
	values   map[spec.Ref]extracted
	forms    secretform.Forms
	byRef    map[spec.Ref]*keyvault.Problem
	order    []spec.Ref
	problems []keyvault.Problem // not of one reference
}

// lookup is what r selects of its secret's value; errNotFetched when the
// secret failed to fetch (a problem the fetch reports).
func (rs *resolver) lookup(r spec.Ref) ([]byte, error) {
	if e, ok := rs.values[r]; ok {
		return e.data, e.err
	}
	res := rs.results[r.ID()]
	if res == nil || res.err != nil {
		return nil, errNotFetched
	}
	d, err := rs.forms.Select(r.ID(), res.secret.Value, res.secret.ContentType, r.Path)
	rs.values[r] = extracted{d, err}
	return d, err
}

// file is the content of f, or false when a problem keeps it from being
// written.
func (rs *resolver) file(ctx context.Context, f spec.File) (FileData, bool) {
	mode, err := f.FileMode()
	if err != nil { // Decode validated it
		rs.problems = append(rs.problems, keyvault.Problem{Files: []string{f.Name}, Cause: err.Error()})
		return FileData{}, false
	}
	var data []byte
	switch {
	case f.Secret != nil:
		data, err = rs.lookup(*f.Secret)
		if err != nil && !errors.Is(err, errNotFetched) { // not fetched: reported by the fetch
			rs.lookupProblem(*f.Secret, f.Name, err)
		}
	case !allFetched(rs.results, f.Refs):
		err = errNotFetched // reported by the fetch
	default:
		data, err = secretform.Render(ctx, f, rs.lookup)
		if err != nil {
			rs.renderProblem(f.Name, err)
		}
	}
	if err != nil {
		return FileData{}, false
	}
	return FileData{Name: f.Name, Mode: mode, Data: data}, true
}

// renderProblem reports why file's template did not render.
func (rs *resolver) renderProblem(file string, err error) {
	var re *secretform.RenderError
	var be *secretform.BundleError
	switch {
	case errors.As(err, &re) && re.Ref != nil && errors.As(err, &be):
		rs.lookupProblem(*re.Ref, file, be) // the secret's problem, not the template's
	case re != nil && re.Ref != nil:
		rs.refProblem(*re.Ref, file, "in the template, "+re.Error(), re.Detail, re.Fix)
	case re != nil:
		rs.problems = append(rs.problems, keyvault.Problem{Files: []string{file}, Cause: "the template: " + re.Error(), Fix: re.Fix})
	default:
		rs.problems = append(rs.problems, keyvault.Problem{Files: []string{file}, Cause: "the template: does not render"})
	}
}

// envFile is the env file of vars, or false when any is missing.
func (rs *resolver) envFile(vars []spec.EnvVar) ([]byte, bool) {
	var env bytes.Buffer
	complete := true
	for _, e := range vars {
		data, err := rs.lookup(e.Secret)
		switch {
		case errors.Is(err, errNotFetched):
			// reported by the fetch
		case err != nil:
			rs.lookupProblem(e.Secret, "", err, e.Name)
		default:
			cause, fix := envValueProblem(e.Name, data)
			if cause == "" {
				writeEnvLine(&env, e.Name, data)
				continue
			}
			rs.problems = append(rs.problems, keyvault.Problem{Vault: e.Secret.Vault, Secret: refLabel(e.Secret), Env: []string{e.Name}, Cause: cause, Fix: fix})
		}
		complete = false
	}
	return env.Bytes(), complete
}

// refProblem reports a reference's problem once, listing every file (or,
// with env set, every variable) it keeps from being written.
func (rs *resolver) refProblem(r spec.Ref, file, cause, detail, fix string, env ...string) {
	if p := rs.byRef[r]; p != nil {
		if env != nil {
			p.Env = append(p.Env, env...)
		} else {
			p.Files = append(p.Files, file)
		}
		return
	}
	p := &keyvault.Problem{Vault: r.Vault, Secret: refLabel(r), Cause: cause, Detail: detail, Fix: fix, Env: env}
	if env == nil {
		p.Files = []string{file}
	}
	rs.byRef[r] = p
	rs.order = append(rs.order, r)
}

// lookupProblem reports what lookup returned for r: a bundle that does not
// parse once for its secret, whatever forms were asked for.
func (rs *resolver) lookupProblem(r spec.Ref, file string, err error, env ...string) {
	var be *secretform.BundleError
	var pe *secretform.PropertyError
	switch {
	case errors.As(err, &be):
		whole := r
		whole.Path = ""
		rs.refProblem(whole, file, be.Problem, be.Detail, be.Fix, env...)
	case errors.As(err, &pe):
		rs.refProblem(r, file, pe.Problem, pe.Detail, pe.Fix, env...)
	default:
		rs.refProblem(r, file, err.Error(), "", "", env...)
	}
}

// refLabel names a reference in a problem: name[/version][#path].
func refLabel(r spec.Ref) string {
	label := keyvault.Label(r.ID())
	if r.Path != "" {
		label += "#" + r.Path
	}
	return label
}

func allFetched(results map[spec.SecretID]*fetchResult, refs map[string]spec.Ref) bool {
	for _, r := range refs {
		if res := results[r.ID()]; res == nil || res.err != nil {
			return false
		}
	}
	return true
}

// maxTerminationMessage is what the kubelet keeps of a termination message.
const maxTerminationMessage = 4096

// writeTerminationLog replaces the termination message with the problem
// lines that fit, whole, in the kubelet's limit. A missing file is left
// missing: outside Kubernetes there is none.
func writeTerminationLog(path, lines string) {
	if len(lines) > maxTerminationMessage {
		cut := strings.LastIndexByte(lines[:maxTerminationMessage], '\n')
		lines = lines[:cut+1]
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString(lines)
	_ = f.Close()
}

// errNotFetched marks a reference whose secret failed to fetch.
var errNotFetched = errors.New("the secret was not fetched")

func writeProblem(dir string, err error) keyvault.Problem {
	p := keyvault.Problem{Cause: "cannot write the files into " + dir + ": " + firstLine(err.Error())}
	switch {
	case errors.Is(err, fs.ErrPermission):
		p.Fix = fmt.Sprintf("the agent runs as uid %d gid %d and needs write access to the %s emptyDir mounted at %s (an emptyDir is world-writable unless something changed its mode)",
			os.Getuid(), os.Getgid(), spec.SecretsVolumeName, dir)
	case errors.Is(err, fs.ErrNotExist):
		p.Fix = fmt.Sprintf("mount the %s emptyDir at %s in the agent container", spec.SecretsVolumeName, dir)
	default:
		p.Fix = fmt.Sprintf("check the %s emptyDir at %s (its sizeLimit, and that only the agent writes there)", spec.SecretsVolumeName, dir)
	}
	return p
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

func distinctVaults(ids []spec.SecretID) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id.Vault] {
			seen[id.Vault] = true
			out = append(out, id.Vault)
		}
	}
	return out
}

func hosts(vaults []string) []string {
	out := make([]string, len(vaults))
	for i, v := range vaults {
		out[i] = keyvault.Host(v)
	}
	return out
}

// secretsOf lists the secrets read from vault, for a sign-in problem.
func secretsOf(ids []spec.SecretID, vault string) string {
	var names []string
	for _, id := range ids {
		if id.Vault == vault {
			names = append(names, keyvault.Label(id))
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
