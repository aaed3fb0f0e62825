package webhook

import (
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
)

// ServiceAccount is what the mutation needs of the pod's ServiceAccount.
type ServiceAccount struct {
	Namespace   string
	Name        string
	Annotations map[string]string
}

// Denial is a pod the webhook refuses: one line per problem, each naming the
// annotation and what is allowed. It never quotes a template's text.
type Denial struct {
	Problems []string
	more     int // problems beyond MaxDenialProblems, counted only
}

// A denial is bounded whatever the pod holds: at most MaxDenialProblems
// lines, each at most MaxProblemLength bytes (values in it are quoted with
// spec.Quote, so a cut line still says what is wrong).
const (
	MaxDenialProblems = 20
	MaxProblemLength  = 512
)

func (d *Denial) Error() string {
	return "kvinject: " + strings.Join(d.Problems, "; ")
}

func (d *Denial) addf(format string, args ...any) {
	if d.full() {
		d.more++
		return
	}
	p := fmt.Sprintf(format, args...)
	if len(p) > MaxProblemLength {
		cut := MaxProblemLength
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		p = p[:cut] + "…"
	}
	d.Problems = append(d.Problems, p)
}

// full says whether a further problem is only counted.
func (d *Denial) full() bool { return len(d.Problems) >= MaxDenialProblems }

// err returns the denial, with a last line counting what was left out, or
// nil when there is no problem.
func (d *Denial) err() error {
	if len(d.Problems) == 0 {
		return nil
	}
	if d.more > 0 {
		d.Problems = append(d.Problems, fmt.Sprintf("and %d more problems: fix these first", d.more))
		d.more = 0
	}
	return d
}

// singleAnnotations are the contract's annotations that are not per file.
var singleAnnotations = []string{
	spec.AnnotationVault, spec.AnnotationClientID, spec.AnnotationTenantID,
	spec.AnnotationTokenExpiration, spec.AnnotationMountPath, spec.AnnotationContainers,
	spec.AnnotationRefresh, spec.AnnotationCache, spec.AnnotationOnChange, spec.AnnotationStatus, spec.AnnotationStatusEnv,
}

// ownContainers are the init containers kvinject adds: a pod's own
// containers may not take their names.
var ownContainers = []string{spec.AgentContainerName, spec.RefreshContainerName}

var fileAnnotationPrefixes = []string{spec.AnnotationSecretPrefix, spec.AnnotationTemplatePrefix, spec.AnnotationPermsPrefix}

// injection is everything parsed from a pod before it is mutated.
type injection struct {
	spec            spec.Spec
	targets         map[string]bool // container names that mount the files
	tokenExpiration int64
	// agentUser and agentGroup are what the agent runs as: the app's user
	// when known and not root, else AgentFallbackUser. Never nil, so the
	// agent never inherits a pod's uid 0.
	agentUser, agentGroup *int64
	// refresh is the kvinject-refresh sidecar's interval; 0: no sidecar.
	refresh time.Duration
	// agentResources and refreshResources are the webhook's requirements
	// with the pod's resource annotations over them.
	agentResources, refreshResources corev1.ResourceRequirements
	// envTo names, per container, the env variables it gets; delivery is
	// how (spec.DeliveryFileKeyRef or spec.DeliveryExec), and edits are,
	// per container, the commands the exec wrapper takes over.
	envTo    map[string][]string
	delivery string
	edits    map[string][]commandEdit
	// warnings are for the creator of an admitted pod: annotations that ask
	// for what this cluster does not run, or that change the pod beyond
	// kvinject's own parts.
	warnings []string
	// onChange is what kvinject.io/on-change adds; nil: nothing.
	onChange *onChangePlan
}

// parse validates the pod's annotations and builds the spec, reporting every
// problem at once, and the warnings for an admitted pod.
func parse(pod *corev1.Pod, sa ServiceAccount, o *Options) (*injection, error) {
	d := &Denial{}
	ann := pod.Annotations
	in := &injection{}
	s := &in.spec
	s.Version = spec.Version

	files, envNames := splitAnnotations(ann, d)
	// The vault first: refs are resolved against it.
	s.Vault = parseVault(ann, o, d)

	in.targets, s.Containers = parseContainers(pod, d)
	s.MountPath = parseMountPath(pod, in.targets, d)
	appUser, appGroup := targetUser(pod, in.targets)
	in.agentUser, in.agentGroup = agentIdentity(appUser, appGroup)

	if len(files) == 0 && len(envNames) == 0 {
		d.addf("no files: add %s<file>: <secret>, %s<file>: <template> or %s<VAR>: <secret>", spec.AnnotationSecretPrefix, spec.AnnotationTemplatePrefix, spec.AnnotationEnvPrefix)
	}
	if len(envNames) > spec.MaxEnv {
		d.addf("%d env variables: at most %d per pod", len(envNames), spec.MaxEnv)
	}
	entrypointAnnotations(ann, d)
	in.delivery = o.envDelivery()
	parseEnv(pod, in, envNames, appUser, o, d)
	if len(files) > spec.MaxFiles {
		d.addf("%d files: at most %d per pod", len(files), spec.MaxFiles)
	}
	defaultMode := "0444"
	if appUser != nil {
		defaultMode = "0400"
	}
	readable := readableByApp(pod, appUser, appGroup)
	for _, name := range sortedKeys(files) {
		s.Files = append(s.Files, parseFile(name, files[name], s.Vault, defaultMode, readable, o, d))
	}

	s.Identity = parseIdentity(ann, sa, o, d)
	in.tokenExpiration = parseTokenExpiration(ann, d)
	s.Identity.TokenExpirationSeconds = in.tokenExpiration
	if v, ok := ann[spec.AnnotationRefresh]; ok {
		in.refresh = parseRefresh(v, o, d)
	}
	var cacheWarning string
	s.Cache, cacheWarning = parseCache(ann, o, d)
	planOnChange(pod, in, d)
	in.agentResources, in.refreshResources = parseResources(ann, o, d)

	if err := d.err(); err != nil {
		return nil, err
	}
	// The files' templates were parsed above (parseTemplate), so they are
	// not parsed again; FuzzMutate decodes every spec it admits with the
	// agent's full check.
	if err := s.ValidateParsed(); err != nil {
		// Parsing above checks more than Validate; reaching this is a bug.
		return nil, fmt.Errorf("kvinject: internal error: built an invalid spec: %w", err)
	}
	if cacheWarning != "" {
		in.warnings = append(in.warnings, cacheWarning)
	}
	if w := onChangeWarning(pod, s.OnChange); w != "" {
		in.warnings = append(in.warnings, w)
	}
	if len(envNames) > 0 && in.delivery == spec.DeliveryExec {
		in.warnings = append(in.warnings, fmt.Sprintf("%s<VAR>: delivered through the exec wrapper %s, which becomes the command of the containers that get them and execs their program (the webhook's --env-delivery %s; this cluster cannot be shown to keep fileKeyRef): a shell opened with kubectl exec does not have their values",
			spec.AnnotationEnvPrefix, spec.ExecCommand, o.EnvDelivery))
	}
	return in, nil
}

// fileAnns are the annotations of one file.
type fileAnns struct{ secret, template, perms *string }

// splitAnnotations sorts kvinject's annotations into files and env
// variables (their names in key order); one that is neither is a problem.
// Single annotations are read where they are used.
func splitAnnotations(ann map[string]string, d *Denial) (files map[string]*fileAnns, envNames []string) {
	files = map[string]*fileAnns{}
	for _, k := range sortedKeys(ann) {
		if !strings.HasPrefix(k, spec.Prefix) || contains(singleAnnotations, k) || contains(resourceAnnotations, k) || k == spec.LabelInject {
			continue
		}
		if strings.HasPrefix(k, spec.AnnotationEntrypointPrefix) {
			continue // checked by entrypointAnnotations
		}
		if name, ok := strings.CutPrefix(k, spec.AnnotationEnvPrefix); ok {
			if err := spec.ValidateEnvName(name); err != nil {
				d.addf("%s: %v", k, err)
				continue
			}
			envNames = append(envNames, name)
			continue
		}
		if !fileAnnotation(files, k, ann[k], d) {
			hint := "" // only counted once the denial is full: no suggestion to look for
			if !d.full() {
				hint = suggestAnnotation(k)
			}
			d.addf("%s: unknown annotation%s", k, hint)
		}
	}
	return files, envNames
}

// fileAnnotation records k in files when it is a file's annotation, and
// says whether it is one.
func fileAnnotation(files map[string]*fileAnns, k, v string, d *Denial) bool {
	for _, p := range fileAnnotationPrefixes {
		name, ok := strings.CutPrefix(k, p)
		if !ok {
			continue
		}
		if err := spec.ValidateFileName(name); err != nil {
			d.addf("%s: %v", k, err)
			return true
		}
		f := files[name]
		if f == nil {
			f = &fileAnns{}
			files[name] = f
		}
		switch p {
		case spec.AnnotationSecretPrefix:
			f.secret = &v
		case spec.AnnotationTemplatePrefix:
			f.template = &v
		case spec.AnnotationPermsPrefix:
			f.perms = &v
		}
		return true
	}
	return false
}

// parseVault reads AnnotationVault, else the webhook's default vault.
func parseVault(ann map[string]string, o *Options, d *Denial) string {
	v, ok := ann[spec.AnnotationVault]
	if !ok {
		if o.defaultVault == "" {
			d.addf("%s: no vault: set it to a vault name or https:// URL (the webhook has no --default-vault)", spec.AnnotationVault)
		}
		return o.defaultVault
	}
	pv, err := spec.ParseVault(v, o.Cloud)
	if err != nil {
		d.addf("%s: %v", spec.AnnotationVault, err)
		return v // already denied: keep refs from reporting a missing vault too
	}
	return pv
}

// parseRef parses a reference of annotation k against the pod's vault. A
// missing vault is not said again: it was denied for the vault.
func parseRef(k, v, vault string, o *Options, d *Denial) spec.Ref {
	r, err := spec.ParseRef(v, vault, o.Cloud)
	if err != nil && !(vault == "" && errors.Is(err, spec.ErrNoVault)) {
		d.addf("%s: %v", k, err)
	}
	return r
}

// parseEnv reads the env annotations named envNames into the spec, and
// plans who gets them and how.
func parseEnv(pod *corev1.Pod, in *injection, envNames []string, appUser *int64, o *Options, d *Denial) {
	if len(envNames) == 0 {
		return
	}
	for _, name := range envNames {
		k := spec.AnnotationEnvPrefix + name
		if in.delivery == spec.DeliveryFileKeyRef && o.kubeMinor < spec.MinEnvFilesMinor {
			d.addf("%s: environment variables from a file (fileKeyRef) need Kubernetes 1.%d or newer, and this cluster runs 1.%d: deliver the value as a file instead, %s<file>: %s, and have the app read it",
				k, spec.MinEnvFilesMinor, o.kubeMinor, spec.AnnotationSecretPrefix, spec.Quote(pod.Annotations[k]))
			continue
		}
		in.spec.Env = append(in.spec.Env, spec.EnvVar{Name: name, Secret: parseRef(k, pod.Annotations[k], in.spec.Vault, o, d)})
	}
	in.envTo = envReceivers(pod, envNames, in.targets)
	if in.delivery == spec.DeliveryExec {
		planExec(pod, in, appUser, d)
	}
}

// parseFile builds one file of the spec from its annotations.
func parseFile(name string, f *fileAnns, vault, defaultMode string, readable func(fs.FileMode) error, o *Options, d *Denial) spec.File {
	file := spec.File{Name: name, Mode: defaultMode}
	switch {
	case f.secret != nil && f.template != nil:
		d.addf("%s%s and %s%s: a file has a secret or a template, not both", spec.AnnotationSecretPrefix, name, spec.AnnotationTemplatePrefix, name)
	case f.secret != nil:
		r := parseRef(spec.AnnotationSecretPrefix+name, *f.secret, vault, o, d)
		file.Secret = &r
	case f.template != nil:
		refs, err := o.parseTemplate(*f.template, vault)
		if err != nil {
			d.addf("%s%s: template %v", spec.AnnotationTemplatePrefix, name, err)
		}
		file.Template, file.Refs = *f.template, refs
	default:
		d.addf("%s%s: no file %s: add %s%s or %s%s", spec.AnnotationPermsPrefix, name, spec.Quote(name), spec.AnnotationSecretPrefix, name, spec.AnnotationTemplatePrefix, name)
	}
	if f.perms != nil {
		m, err := spec.ParseMode(*f.perms)
		if err == nil && (f.secret != nil || f.template != nil) {
			err = readable(m)
		}
		if err != nil {
			d.addf("%s%s: %v", spec.AnnotationPermsPrefix, name, err)
		}
		file.Mode = spec.FormatMode(m)
	}
	return file
}

// parseTokenExpiration reads AnnotationTokenExpiration, else the default.
func parseTokenExpiration(ann map[string]string, d *Denial) int64 {
	v, ok := ann[spec.AnnotationTokenExpiration]
	if !ok {
		return spec.DefaultTokenExpirationSeconds
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err == nil {
		err = spec.ValidateTokenExpiration(n)
	}
	if err != nil {
		d.addf("%s: %s must be a number of seconds from %d to %d", spec.AnnotationTokenExpiration, spec.Quote(v), spec.MinTokenExpirationSeconds, spec.MaxTokenExpirationSeconds)
	}
	return n
}

// planExec says how the exec wrapper runs the containers that get env
// variables, and with which mode the agent writes the env file they read.
func planExec(pod *corev1.Pod, in *injection, appUser *int64, d *Denial) {
	s := &in.spec
	s.EnvDelivery = spec.DeliveryExec
	in.edits = map[string][]commandEdit{}
	wrapped := map[string]bool{}
	for c := range allContainers(pod) {
		names := in.envTo[c.Name]
		if len(names) == 0 {
			continue
		}
		wrapped[c.Name] = true
		placeholderProblems(c, d)
		in.edits[c.Name] = wrapEdits(pod, c, execConfig(c, s.MountPath, names), d)
	}
	// The app's user reads the env file: 0400 when the agent writes it as
	// that user, for every container that reads it.
	u, _ := targetUser(pod, wrapped)
	s.EnvFileMode = "0444"
	if u != nil && appUser != nil && *u == *appUser {
		s.EnvFileMode = "0400"
	}
}

func parseIdentity(ann map[string]string, sa ServiceAccount, o *Options, d *Denial) spec.Identity {
	var id spec.Identity
	saName := sa.Namespace + "/" + sa.Name
	switch {
	case ann[spec.AnnotationClientID] != "":
		id.ClientID = ann[spec.AnnotationClientID]
		if err := spec.ValidateClientID(id.ClientID); err != nil {
			d.addf("%s: %v", spec.AnnotationClientID, err)
		}
	case sa.Annotations[spec.SAAnnotationClientID] != "":
		id.ClientID = sa.Annotations[spec.SAAnnotationClientID]
		if err := spec.ValidateClientID(id.ClientID); err != nil {
			d.addf("ServiceAccount %s annotation %s: %v", saName, spec.SAAnnotationClientID, err)
		}
	default:
		d.addf("no client id: set the pod annotation %s or the annotation %s on ServiceAccount %s",
			spec.AnnotationClientID, spec.SAAnnotationClientID, saName)
	}
	switch {
	case ann[spec.AnnotationTenantID] != "":
		id.TenantID = ann[spec.AnnotationTenantID]
		if err := spec.ValidateTenantID(id.TenantID); err != nil {
			d.addf("%s: %v", spec.AnnotationTenantID, err)
		}
	case sa.Annotations[spec.SAAnnotationTenantID] != "":
		id.TenantID = sa.Annotations[spec.SAAnnotationTenantID]
		if err := spec.ValidateTenantID(id.TenantID); err != nil {
			d.addf("ServiceAccount %s annotation %s: %v", saName, spec.SAAnnotationTenantID, err)
		}
	case o.TenantID != "":
		id.TenantID = o.TenantID
	default:
		d.addf("no tenant id: set the pod annotation %s or the annotation %s on ServiceAccount %s (the webhook has no --tenant-id)",
			spec.AnnotationTenantID, spec.SAAnnotationTenantID, saName)
	}
	return id
}

// parseRefresh reads AnnotationRefresh: a Go duration of at least
// MinRefresh, on an API server that runs native sidecars.
func parseRefresh(v string, o *Options, d *Denial) time.Duration {
	interval, err := time.ParseDuration(v)
	switch {
	case err != nil:
		d.addf("%s: %s is not a duration: use one like 15m or 1h", spec.AnnotationRefresh, spec.Quote(v))
	case interval < spec.MinRefresh:
		d.addf("%s: %s is shorter than the minimum of %v", spec.AnnotationRefresh, spec.Quote(v), spec.MinRefresh)
	case o.kubeMinor < spec.MinSidecarMinor:
		d.addf("%s: the refresh sidecar is a native sidecar, which needs Kubernetes 1.%d or newer, and this cluster runs 1.%d: remove the annotation (the files are then written once, when the pod starts)",
			spec.AnnotationRefresh, spec.MinSidecarMinor, o.kubeMinor)
	}
	return interval
}

// parseCache reads AnnotationCache: the cache the agent asks (nil: none),
// and a warning for a pod that asks for a cache this cluster does not run.
func parseCache(ann map[string]string, o *Options, d *Denial) (*spec.Cache, string) {
	v, ok := ann[spec.AnnotationCache]
	if !ok {
		if !o.CacheByDefault {
			return nil, ""
		}
		v = spec.CacheOn
	}
	switch v {
	case spec.CacheOn, spec.CacheRequired:
	case spec.CacheOff:
		return nil, ""
	default:
		d.addf("%s: %s must be %q, %q or %q", spec.AnnotationCache, spec.Quote(v), spec.CacheOn, spec.CacheRequired, spec.CacheOff)
		return nil, ""
	}
	if o.cacheURL == "" {
		if v == spec.CacheRequired {
			d.addf("%s: %q needs the cluster cache, and this cluster runs none (the webhook has no --cache-url): use %q, which reads from Azure directly where no cache runs, or remove the annotation",
				spec.AnnotationCache, v, spec.CacheOn)
			return nil, ""
		}
		// A manifest that says "true" works on clusters with and without a cache.
		return nil, fmt.Sprintf("%s: %q, but this cluster runs no kvinject cache (the webhook has no --cache-url): the pod reads from Azure directly", spec.AnnotationCache, v)
	}
	return &spec.Cache{URL: o.cacheURL, CA: o.cacheCA, Required: v == spec.CacheRequired}, ""
}

// parseContainers returns the target containers: the named ones, or every
// regular container.
func parseContainers(pod *corev1.Pod, d *Denial) (map[string]bool, []string) {
	all := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		if !contains(ownContainers, c.Name) {
			all[c.Name] = true
		}
	}
	for _, c := range pod.Spec.Containers {
		all[c.Name] = true
		if contains(ownContainers, c.Name) {
			d.addf("container %s: the name is kvinject's own init container's: rename the container", spec.Quote(c.Name))
		}
	}
	targets := map[string]bool{}
	v, ok := pod.Annotations[spec.AnnotationContainers]
	if !ok {
		for _, c := range pod.Spec.Containers {
			targets[c.Name] = true
		}
		return targets, sortedKeys(targets)
	}
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			d.addf("%s: %s has an empty name: list container names separated by commas", spec.AnnotationContainers, spec.Quote(v))
		case !all[n]:
			d.addf("%s: no container %s in this pod (containers: %s)", spec.AnnotationContainers, spec.Quote(n), strings.Join(sortedKeys(all), ", "))
		default:
			targets[n] = true
		}
	}
	if len(targets) == 0 && len(d.Problems) == 0 {
		d.addf("%s: names no container", spec.AnnotationContainers)
	}
	return targets, sortedKeys(targets)
}

func parseMountPath(pod *corev1.Pod, targets map[string]bool, d *Denial) string {
	p, ok := pod.Annotations[spec.AnnotationMountPath]
	if !ok {
		p = spec.DefaultMountPath
	}
	if err := spec.ValidateMountPath(p); err != nil {
		d.addf("%s: %v", spec.AnnotationMountPath, err)
		return p
	}
	for c := range allContainers(pod) {
		if !targets[c.Name] {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.MountPath == p && m.Name != spec.SecretsVolumeName {
				d.addf("%s: %q collides with volume %q already mounted there in container %q: choose another path",
					spec.AnnotationMountPath, p, m.Name, c.Name)
			}
		}
	}
	return p
}

// agentIdentity is the uid and gid the agent runs as: the app's user when it
// is known and not root, so files can be 0400; else AgentFallbackUser, with
// the app's group when known so that 0440 files stay readable by the app.
func agentIdentity(appUser, appGroup *int64) (uid, gid *int64) {
	if appUser != nil {
		return ptr.To(*appUser), appGroup
	}
	if appGroup != nil {
		return ptr.To[int64](spec.AgentFallbackUser), ptr.To(*appGroup)
	}
	return ptr.To[int64](spec.AgentFallbackUser), ptr.To[int64](spec.AgentFallbackUser)
}

// readableByApp returns the check of an explicit file mode against who will
// read the file. When the agent runs as the app's user, the owner bit is
// enough. Otherwise the file belongs to AgentFallbackUser and the app reads it
// through the group bit (the app's known group, which the agent shares, or
// the pod's fsGroup, which both hold and which owns the volume) or the
// other bit. A root app is no exception: without CAP_DAC_OVERRIDE, which
// restricted pods drop, root reads another uid's 0400 file no better.
func readableByApp(pod *corev1.Pod, appUser, appGroup *int64) func(fs.FileMode) error {
	fsGroup := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.FSGroup != nil
	return func(m fs.FileMode) error {
		switch {
		case appUser != nil, m&0o004 != 0:
			return nil
		case m&0o040 != 0 && (appGroup != nil || fsGroup):
			return nil
		case m&0o040 != 0:
			return fmt.Errorf("mode %s lets only the file's owner and group read it, and the app's group is not known at admission: set runAsGroup or fsGroup in the pod's securityContext, or use 0444", spec.FormatMode(m))
		default:
			return fmt.Errorf("mode %s lets only the file's owner read it, and the app's user is not known at admission or is root (the agent then writes as %d): set a non-root runAsUser in the pod's securityContext, or use 0444", spec.FormatMode(m), spec.AgentFallbackUser)
		}
	}
}

// targetUser returns the user and group every target container runs as, when
// known at admission and the same for all of them, so the agent can run as
// that user and write files only it can read. Root is never returned as the
// user: the agent runs as non-root.
func targetUser(pod *corev1.Pod, targets map[string]bool) (uid, gid *int64) {
	var uids, gids []*int64
	for c := range allContainers(pod) {
		if !targets[c.Name] {
			continue
		}
		u, g := containerUser(pod, c)
		uids, gids = append(uids, u), append(gids, g)
	}
	uid, gid = same(uids), same(gids)
	if uid != nil && *uid == 0 {
		uid = nil
	}
	return uid, gid
}

// containerUser is the user and group container c runs as, when known at
// admission: its own securityContext's, else the pod's.
func containerUser(pod *corev1.Pod, c *corev1.Container) (uid, gid *int64) {
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	return uid, gid
}

func same(vs []*int64) *int64 {
	if len(vs) == 0 || vs[0] == nil {
		return nil
	}
	for _, v := range vs[1:] {
		if v == nil || *v != *vs[0] {
			return nil
		}
	}
	v := *vs[0]
	return &v
}

// allContainers yields the pod's init containers, then its containers, in
// place: a Container is large, and admission reads them several times.
func allContainers(pod *corev1.Pod) iter.Seq[*corev1.Container] {
	return func(yield func(*corev1.Container) bool) {
		for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for i := range list {
				if !yield(&list[i]) {
					return
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
