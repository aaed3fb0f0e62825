package esoconvert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/suggest"
)

// Options fill in what ESO's objects do not say.
type Options struct {
	// Issuer is the cluster's service-account issuer URL, for the
	// federated credential; empty prints a placeholder.
	Issuer string
	// IdentityName and ResourceGroup name the managed identity ESO uses.
	IdentityName  string
	ResourceGroup string
	// KubeMinor is the cluster's Kubernetes 1.x minor version, which
	// decides as the webhook would how env variables are delivered, and
	// whether pulls move to the credential provider's node mode (before
	// 1.34 the kubelet sends no pod token); 0 when not known: both env
	// deliveries are described, pulls use the pod's token.
	KubeMinor int
}

// nodeMode says whether pull credentials move to the provider's node mode:
// kubelets before 1.34 send credential providers no ServiceAccount token
// (1.33 only with an alpha gate, which OpenShift 4.20 keeps off).
func (o Options) nodeMode() bool { return o.KubeMinor > 0 && o.KubeMinor < 34 }

// Input is every object read, by kind.
type Input struct {
	externalSecrets []externalSecret
	stores          map[string]secretStore // "Kind/namespace/name"
	serviceAccounts map[string]meta        // "namespace/name"
	workloads       []workload
}

var podTemplateKinds = map[string]string{
	"Deployment": "spec.template", "StatefulSet": "spec.template", "DaemonSet": "spec.template",
	"ReplicaSet": "spec.template", "Job": "spec.template", "CronJob": "spec.jobTemplate.spec.template",
}

// Read adds the objects of a YAML stream (several documents allowed) to in.
func (in *Input) Read(r io.Reader, source string) error {
	if in.stores == nil {
		in.stores, in.serviceAccounts = map[string]secretStore{}, map[string]meta{}
	}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		raw, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		if err := in.add(raw); err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
	}
}

func (in *Input) add(raw []byte) error {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return err
	}
	switch o.Kind {
	case "ExternalSecret":
		var es externalSecret
		if err := json.Unmarshal(raw, &es); err != nil {
			return fmt.Errorf("ExternalSecret %s: %w", o.Metadata.Name, err)
		}
		in.externalSecrets = append(in.externalSecrets, es)
	case "SecretStore", "ClusterSecretStore":
		var s secretStore
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("%s %s: %w", o.Kind, o.Metadata.Name, err)
		}
		ns := s.Metadata.Namespace
		if o.Kind == "ClusterSecretStore" {
			ns = ""
		}
		in.stores[o.Kind+"/"+ns+"/"+o.Metadata.Name] = s
	case "ServiceAccount":
		in.serviceAccounts[o.Metadata.Namespace+"/"+o.Metadata.Name] = o.Metadata
	case "Pod":
		var p struct {
			Metadata meta    `json:"metadata"`
			Spec     podSpec `json:"spec"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("decode pod %s: %w", o.Metadata.Name, err)
		}
		w := workload{Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name}
		w.Template.Metadata, w.Template.Spec = p.Metadata, p.Spec
		in.workloads = append(in.workloads, w)
	default:
		path, ok := podTemplateKinds[o.Kind]
		if !ok {
			return nil // nothing to convert or check
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		var t any = m
		for _, k := range strings.Split(path, ".") {
			mm, _ := t.(map[string]any)
			t = mm[k]
		}
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		w := workload{Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name}
		if err := json.Unmarshal(b, &w.Template); err != nil {
			return fmt.Errorf("%s %s: pod template: %w", o.Kind, o.Metadata.Name, err)
		}
		in.workloads = append(in.workloads, w)
	}
	return nil
}

// converted is one ExternalSecret that can move: its files.
type converted struct {
	es     *externalSecret
	store  string
	cloud  spec.Cloud
	vault  string // normalised URL
	tenant string
	files  []file
	esoSA  string // ESO's ServiceAccount, namespace/name
	// pull: a dockerconfigjson for imagePullSecrets, its one file the
	// registry credential the kubelet's credential provider reads instead.
	pull bool
}

// passThroughDockerConfig says why a dockerconfigjson ExternalSecret is not
// just one Key Vault value copied into .dockerconfigjson (the reference
// setup's `{{ .dockercfgjson | toString }}`), or "" when it is.
func passThroughDockerConfig(es *externalSecret) string {
	t := es.Spec.Target.Template
	if len(es.Spec.Data) != 1 || len(es.Spec.DataFrom) != 0 {
		return "from several values"
	}
	key := es.Spec.Data[0].SecretKey
	if len(t.Data) == 0 {
		if key == ".dockerconfigjson" {
			return ""
		}
		return "without a template for .dockerconfigjson"
	}
	v, ok := t.Data[".dockerconfigjson"]
	if !ok || len(t.Data) != 1 {
		return "with a template of other keys than .dockerconfigjson"
	}
	compact := strings.Join(strings.Fields(v), "")
	if compact != "{{."+key+"}}" && compact != "{{."+key+"|toString}}" {
		return "with a template that builds the value"
	}
	return ""
}

type file struct {
	key string   // the Secret's key, which becomes the file name
	ref spec.Ref // what it reads
	b64 bool     // ESO decoded it from base64
	// cert: ESO read a certificate object (cert/NAME), whose leaf it gave
	// in DER; the file is now NAME#fullchain, PEM.
	cert bool
}

// Result is what Convert found.
type Result struct {
	Moves      []Move
	CannotMove []string
	Problems   []string
}

// Move is one workload and what it needs to read its secrets from files.
type Move struct {
	Workload       string // Kind namespace/name
	Namespace      string
	ServiceAccount string
	Annotations    map[string]string
	Notes          []string
	ClientID       string // from ESO's ServiceAccount, when in the input
	TenantID       string
	ESOServiceAcct string
	From           []string // ExternalSecrets it replaces
	Secrets        []string // Secrets that can go once it moved
	// PullSecret is the ServiceAccount's kvinject.io/pull-secret when its
	// imagePullSecrets move to the credential provider, for the images of
	// Registries.
	PullSecret string
	Registries []string
	// PullSecretNames are the imagePullSecrets to remove.
	PullSecretNames []string
	// EnvContainers get env variables from Key Vault, in the order found.
	EnvContainers []EnvContainer

	env   []envUse        // env entries and envFrom reading a Secret that moves
	files map[string]bool // Secrets that moves mounted as volumes
}

// EnvContainer is a container that gets env variables from Key Vault.
type EnvContainer struct {
	Name, Image string
	// Command and Args: whether the container sets them. Without a
	// command, the exec wrapper needs the image's ENTRYPOINT (and its CMD
	// unless Args) in the kvinject.io/entrypoint-<container> annotation.
	Command, Args bool
	// Entrypoint is that annotation's value when it was read from the
	// image (ResolveEntrypoints), and EntrypointFrom says from where.
	Entrypoint     string
	EntrypointFrom string
}

// envUse is a container's env entry (name and key set) or envFrom (both
// empty) reading a Secret that moves.
type envUse struct {
	container, name, secret, key string
}

var environmentClouds = map[string]string{
	"": "AzurePublicCloud", "PublicCloud": "AzurePublicCloud", "ChinaCloud": "AzureChinaCloud",
	"USGovernmentCloud": "AzureUSGovernment",
}

// Convert plans the move of every workload in the input.
func Convert(in *Input) Result {
	p := planner{in: in, byTarget: map[string]*converted{}, unmovable: map[string]string{},
		allTargets: map[string][]string{}, consumed: map[string]bool{}}
	p.convertAll()
	for _, w := range in.workloads {
		if m, ok := p.workload(w); ok {
			p.res.Moves = append(p.res.Moves, m)
		}
	}
	p.leftovers()
	sort.Strings(p.res.CannotMove)
	sort.Strings(p.res.Problems)
	return p.res
}

// planner is Convert's state: the ExternalSecrets by the Secret they make,
// and which of those Secrets the workloads read.
type planner struct {
	in         *Input
	res        Result
	byTarget   map[string]*converted // namespace/secret -> conversion
	unmovable  map[string]string     // namespace/secret -> why
	allTargets map[string][]string   // namespace -> secret names made by ESO
	consumed   map[string]bool       // namespace/secret read by a workload
}

// convertAll maps every ExternalSecret to files, or records why it cannot move.
func (p *planner) convertAll() {
	for i := range p.in.externalSecrets {
		es := &p.in.externalSecrets[i]
		target := es.Spec.Target.Name
		if target == "" {
			target = es.Metadata.Name
		}
		key := es.Metadata.Namespace + "/" + target
		p.allTargets[es.Metadata.Namespace] = append(p.allTargets[es.Metadata.Namespace], target)
		c, why := convertOne(p.in, es)
		if why != "" {
			p.unmovable[key] = why
			continue
		}
		p.byTarget[key] = c
	}
}

// leftovers says what no workload read.
func (p *planner) leftovers() {
	for k, why := range p.unmovable {
		if !p.consumed[k] {
			p.res.CannotMove = append(p.res.CannotMove, fmt.Sprintf("Secret %s: %s", k, why))
		}
	}
	for k, c := range p.byTarget {
		if !p.consumed[k] {
			p.res.CannotMove = append(p.res.CannotMove, fmt.Sprintf("ExternalSecret %s/%s: no workload in the input reads its Secret %s; pass the Deployment (or Pod) that does",
				c.es.Metadata.Namespace, c.es.Metadata.Name, k))
		}
	}
}

// workloadPlan is what one workload reads of the Secrets ESO makes.
type workloadPlan struct {
	*planner
	w            workload
	m            *Move
	uses, pulls  []*converted
	consumers    map[string]bool // containers reading a Secret that moves
	envByName    map[string]*EnvContainer
	envContainer []string // names, in the order their env was found
}

// workload plans the move of one workload; false when it reads nothing
// that moves.
func (p *planner) workload(w workload) (Move, bool) {
	m := Move{Workload: w.Kind + " " + w.Namespace + "/" + w.Name, Namespace: w.Namespace, Annotations: map[string]string{}}
	m.ServiceAccount = w.Template.Spec.ServiceAccountName
	if m.ServiceAccount == "" {
		m.ServiceAccount = "default"
	}
	wp := &workloadPlan{planner: p, w: w, m: &m, consumers: map[string]bool{}, envByName: map[string]*EnvContainer{}}
	wp.pullSecrets()
	var inits []string
	for _, c := range w.Template.Spec.InitContainers {
		inits = append(inits, c.Name)
	}
	for _, c := range append(append([]container(nil), w.Template.Spec.InitContainers...), w.Template.Spec.Containers...) {
		wp.env(c)
	}
	wp.volumes()
	for _, n := range inits {
		if wp.consumers[n] {
			// Init containers get nothing by default: name every consumer.
			m.Annotations[spec.AnnotationContainers] = strings.Join(sortedKeys(wp.consumers), ",")
			break
		}
	}
	if len(wp.uses) == 0 && len(wp.pulls) == 0 {
		return m, false
	}
	if len(wp.uses) > 0 {
		p.res.Problems = append(p.res.Problems, m.plan(wp.uses)...)
	}
	p.res.Problems = append(p.res.Problems, m.planPull(wp.pulls, w.Template.Spec.InitContainers, w.Template.Spec.Containers)...)
	for _, name := range wp.envContainer {
		m.EnvContainers = append(m.EnvContainers, *wp.envByName[name])
	}
	if sa, ok := p.in.serviceAccounts[m.ESOServiceAcct]; ok {
		m.ClientID = sa.Annotations[spec.SAAnnotationClientID]
	}
	return m, true
}

// use records that the workload reads secret (in where): a conversion it
// uses, a Secret that cannot move, or a broken reference.
func (wp *workloadPlan) use(secret, where string) {
	k := wp.w.Namespace + "/" + secret
	if c, ok := wp.byTarget[k]; ok {
		if !containsPtr(wp.uses, c) {
			wp.uses = append(wp.uses, c)
		}
		wp.consumed[k] = true
		return
	}
	if why, ok := wp.unmovable[k]; ok {
		wp.consumed[k] = true
		wp.res.CannotMove = append(wp.res.CannotMove, fmt.Sprintf("%s %s reads Secret %s: %s", wp.m.Workload, where, secret, why))
		return
	}
	if len(wp.allTargets[wp.w.Namespace]) > 0 {
		wp.res.Problems = append(wp.res.Problems, fmt.Sprintf("%s %s reads Secret %s, which no ExternalSecret in the input creates%s",
			wp.m.Workload, where, secret, closest(secret, wp.allTargets[wp.w.Namespace])))
	}
}

// moves says whether the workload's Secret secret moves to kvinject.
func (wp *workloadPlan) moves(secret string) bool {
	_, ok := wp.byTarget[wp.w.Namespace+"/"+secret]
	return ok
}

func (wp *workloadPlan) pullSecrets() {
	for _, ps := range wp.w.Template.Spec.ImagePullSecrets {
		if c, ok := wp.byTarget[wp.w.Namespace+"/"+ps.Name]; ok && c.pull {
			wp.consumed[wp.w.Namespace+"/"+ps.Name] = true
			if !containsPtr(wp.pulls, c) {
				wp.pulls = append(wp.pulls, c)
				wp.m.PullSecretNames = append(wp.m.PullSecretNames, ps.Name)
			}
			continue
		}
		wp.use(ps.Name, "imagePullSecrets")
	}
}

// env records c's env entries and envFrom that read a Secret.
func (wp *workloadPlan) env(c container) {
	m := wp.m
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			wp.use(ref.Name, fmt.Sprintf("container %s env %s", c.Name, e.Name))
			if wp.moves(ref.Name) {
				m.env = append(m.env, envUse{container: c.Name, name: e.Name, secret: ref.Name, key: ref.Key})
				wp.readsEnv(c)
			}
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			wp.use(ef.SecretRef.Name, fmt.Sprintf("container %s envFrom", c.Name))
			if wp.moves(ef.SecretRef.Name) {
				m.env = append(m.env, envUse{container: c.Name, secret: ef.SecretRef.Name})
				wp.readsEnv(c)
				m.Notes = append(m.Notes, fmt.Sprintf("container %s: remove its envFrom of Secret %s (the Secret goes away); each of its keys becomes a %s<KEY> annotation", c.Name, ef.SecretRef.Name, spec.AnnotationEnvPrefix))
			}
		}
	}
}

// readsEnv records that c gets env variables from Key Vault.
func (wp *workloadPlan) readsEnv(c container) {
	wp.consumers[c.Name] = true
	if _, ok := wp.envByName[c.Name]; !ok {
		wp.envByName[c.Name] = &EnvContainer{Name: c.Name, Image: c.Image, Command: len(c.Command) > 0, Args: len(c.Args) > 0}
		wp.envContainer = append(wp.envContainer, c.Name)
	}
}

// volumes records the Secret volumes.
func (wp *workloadPlan) volumes() {
	wp.m.files = map[string]bool{}
	for _, v := range wp.w.Template.Spec.Volumes {
		if v.Secret != nil {
			wp.use(v.Secret.SecretName, "volume "+v.Name)
			if wp.moves(v.Secret.SecretName) {
				wp.m.files[v.Secret.SecretName] = true
				wp.m.Notes = append(wp.m.Notes, fmt.Sprintf("volume %s: mounted files move to %s (or set %s to the old mount path and drop the volume)", v.Name, spec.DefaultMountPath, spec.AnnotationMountPath))
			}
		}
	}
}

// planPull moves a workload's imagePullSecrets to the credential provider:
// one pull credential per ServiceAccount, read from Key Vault with the pod's
// own token, for the registries of its images.
func (m *Move) planPull(pulls []*converted, containerLists ...[]container) (problems []string) {
	if len(pulls) == 0 {
		return nil
	}
	if len(pulls) > 1 {
		return []string{fmt.Sprintf("%s has %d pull Secrets from ExternalSecrets: a ServiceAccount names one %s; merge their dockerconfigjson values into one Key Vault secret",
			m.Workload, len(pulls), spec.SAAnnotationPullSecret)}
	}
	c := pulls[0]
	m.From = append(m.From, "ExternalSecret "+c.es.Metadata.Namespace+"/"+c.es.Metadata.Name)
	m.Secrets = append(m.Secrets, "Secret "+c.es.Metadata.Namespace+"/"+targetName(c.es))
	m.PullSecret = c.files[0].ref.String()
	if m.TenantID == "" {
		m.TenantID, m.ESOServiceAcct = c.tenant, c.esoSA
	}
	seen := map[string]bool{}
	for _, cs := range containerLists {
		for _, ct := range cs {
			if host := registryHost(ct.Image); host != "" && !seen[host] {
				seen[host] = true
				m.Registries = append(m.Registries, host)
			}
		}
	}
	sort.Strings(m.Registries)
	return nil
}

// registryHost is an image's registry host[:port], or "" for Docker Hub's
// short names.
func registryHost(image string) string {
	first, _, ok := strings.Cut(image, "/")
	if !ok || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return ""
	}
	return first
}

// plan fills in the annotations for the ExternalSecrets a workload uses.
func (m *Move) plan(uses []*converted) (problems []string) {
	vaults := map[string]bool{}
	for _, c := range uses {
		vaults[c.vault] = true
	}
	shared := ""
	if len(vaults) == 1 {
		shared = uses[0].vault
		m.Annotations[spec.AnnotationVault] = vaultAnnotation(shared, uses[0].cloud)
	}
	for _, c := range uses {
		m.From = append(m.From, "ExternalSecret "+c.es.Metadata.Namespace+"/"+c.es.Metadata.Name)
		target := targetName(c.es)
		m.Secrets = append(m.Secrets, "Secret "+c.es.Metadata.Namespace+"/"+target)
		m.TenantID, m.ESOServiceAcct = c.tenant, c.esoSA
		if m.files[target] {
			problems = append(problems, m.planFiles(c, shared)...)
		}
		for _, u := range m.env {
			if u.secret != target {
				continue
			}
			if u.name == "" { // envFrom: every key, named as it is
				for _, f := range c.files {
					problems = append(problems, m.planEnv(c, f, f.key, shared, fmt.Sprintf("container %s envFrom %s key %q", u.container, target, f.key))...)
				}
				continue
			}
			i := slices.IndexFunc(c.files, func(f file) bool { return f.key == u.key })
			if i < 0 {
				problems = append(problems, fmt.Sprintf("%s container %s env %s reads key %q of Secret %s, which ExternalSecret %s does not make: after the move it would point at a Secret that no longer exists",
					m.Workload, u.container, u.name, u.key, target, c.es.Metadata.Name))
				continue
			}
			problems = append(problems, m.planEnv(c, c.files[i], u.name, shared, fmt.Sprintf("container %s env %s", u.container, u.name))...)
			m.Notes = append(m.Notes, fmt.Sprintf("container %s: env %s comes from Key Vault (%s%s), its entry replaced in place by the webhook: the Deployment keeps it as it is", u.container, u.name, spec.AnnotationEnvPrefix, u.name))
		}
	}
	return problems
}

// planFiles adds a file per key of c's Secret, mounted as a volume.
func (m *Move) planFiles(c *converted, shared string) (problems []string) {
	for _, f := range c.files {
		ref := refText(f.ref, shared)
		secretKey := spec.AnnotationSecretPrefix + f.key
		templateKey := spec.AnnotationTemplatePrefix + f.key
		if _, dup := m.Annotations[secretKey]; dup {
			problems = append(problems, fmt.Sprintf("%s: two Secrets have the key %q: rename one file", m.Workload, f.key))
			continue
		}
		if _, dup := m.Annotations[templateKey]; dup {
			problems = append(problems, fmt.Sprintf("%s: two Secrets have the key %q: rename one file", m.Workload, f.key))
			continue
		}
		if f.b64 {
			m.Annotations[templateKey] = fmt.Sprintf(`{{ secret %q | b64dec }}`, ref)
		} else {
			m.Annotations[secretKey] = ref
		}
		if f.cert {
			m.Notes = append(m.Notes, fmt.Sprintf("file %s: certificate %s now comes as PEM, the leaf then its intermediates (ESO gave the leaf alone, in DER); its private key comes along too: add %s<file>: %s#%s for it",
				f.key, f.ref.Name, spec.AnnotationSecretPrefix, f.ref.Name, spec.CertFormKey))
		}
	}
	return problems
}

// planEnv adds the variable name from f.
func (m *Move) planEnv(c *converted, f file, name, shared, where string) []string {
	if err := spec.ValidateEnvName(name); err != nil {
		return []string{fmt.Sprintf("%s %s: %v: it cannot become a %s annotation; deliver it as a file", m.Workload, where, err, spec.AnnotationEnvPrefix)}
	}
	if f.b64 {
		return []string{fmt.Sprintf("%s %s: ExternalSecret %s decodes it from base64, which an env variable from Key Vault cannot: deliver it as a file (%s<file>: {{ secret ... | b64dec }})",
			m.Workload, where, c.es.Metadata.Name, spec.AnnotationTemplatePrefix)}
	}
	if f.cert {
		return []string{fmt.Sprintf("%s %s: ExternalSecret %s reads certificate %s, whose PEM spans lines, which an env variable from Key Vault cannot hold: deliver it as a file (%s<file>: %s#%s)",
			m.Workload, where, c.es.Metadata.Name, f.ref.Name, spec.AnnotationSecretPrefix, f.ref.Name, spec.CertFormFullchain)}
	}
	key := spec.AnnotationEnvPrefix + name
	ref := refText(f.ref, shared)
	if old, dup := m.Annotations[key]; dup && old != ref {
		return []string{fmt.Sprintf("%s %s: two env variables named %s read different secrets: rename one", m.Workload, where, name)}
	}
	m.Annotations[key] = ref
	return nil
}

func targetName(es *externalSecret) string {
	if es.Spec.Target.Name != "" {
		return es.Spec.Target.Name
	}
	return es.Metadata.Name
}

// convertOne maps one ExternalSecret to files, or says why it cannot move.
func convertOne(in *Input, es *externalSecret) (*converted, string) {
	name := "ExternalSecret " + es.Metadata.Namespace + "/" + es.Metadata.Name
	pull, why := targetTemplate(name, es)
	if why != "" {
		return nil, why
	}
	if why := dataFrom(name, es); why != "" {
		return nil, why
	}
	c, why := fromStore(in, name, es)
	if why != "" {
		return nil, why
	}
	c.pull = pull
	if len(es.Spec.Data) == 0 {
		return nil, fmt.Sprintf("%s has no data entries", name)
	}
	for _, d := range es.Spec.Data {
		f, why := dataFile(name, d.SecretKey, d.RemoteRef, c.vault, c.cloud)
		if why != "" {
			return nil, why
		}
		c.files = append(c.files, f)
	}
	return c, ""
}

// targetTemplate reads the target's template: whether the Secret is an
// image pull secret kvinject can serve, or why it cannot move.
func targetTemplate(name string, es *externalSecret) (pull bool, why string) {
	t := es.Spec.Target.Template
	if t == nil {
		return false, ""
	}
	switch t.Type {
	case "kubernetes.io/dockercfg":
		return false, fmt.Sprintf("%s makes a kubernetes.io/dockercfg Secret (the legacy format): store the credential in Key Vault as a dockerconfigjson ({\"auths\":{...}}) for %s", name, spec.SAAnnotationPullSecret)
	case "kubernetes.io/dockerconfigjson":
		if why := passThroughDockerConfig(es); why != "" {
			return false, fmt.Sprintf("%s makes a kubernetes.io/dockerconfigjson Secret %s: store the finished dockerconfigjson in one Key Vault secret for %s", name, why, spec.SAAnnotationPullSecret)
		}
		pull = true
	case "kubernetes.io/tls":
		return false, fmt.Sprintf("%s makes a kubernetes.io/tls Secret, which Ingress and other controllers read from the API: keep it with ESO", name)
	}
	if len(t.Data) > 0 && !pull {
		return false, fmt.Sprintf("%s renders an ESO template: rewrite it as %s<file> with {{ secret \"<ref>\" }}", name, spec.AnnotationTemplatePrefix)
	}
	return pull, ""
}

// dataFrom says why an ExternalSecret's dataFrom cannot move, if it cannot.
func dataFrom(name string, es *externalSecret) string {
	for _, df := range es.Spec.DataFrom {
		switch {
		case df.Find != nil:
			return fmt.Sprintf("%s uses dataFrom.find, which lists the vault at sync time; kvinject reads named secrets only: list them as %s<file>", name, spec.AnnotationSecretPrefix)
		case df.Extract != nil:
			return fmt.Sprintf("%s uses dataFrom.extract of %q: name each property as %s<file>: %s#<property>", name, df.Extract.Key, spec.AnnotationSecretPrefix, df.Extract.Key)
		}
	}
	return ""
}

// fromStore reads the ExternalSecret's store: its vault, cloud, tenant and
// ESO's ServiceAccount, or why it cannot move.
func fromStore(in *Input, name string, es *externalSecret) (*converted, string) {
	storeKind := es.Spec.SecretStoreRef.Kind
	if storeKind == "" {
		storeKind = "SecretStore"
	}
	storeNS := es.Metadata.Namespace
	if storeKind == "ClusterSecretStore" {
		storeNS = ""
	}
	store, ok := in.stores[storeKind+"/"+storeNS+"/"+es.Spec.SecretStoreRef.Name]
	if !ok {
		return nil, fmt.Sprintf("%s uses %s %s, which is not in the input: pass it too", name, storeKind, es.Spec.SecretStoreRef.Name)
	}
	az := store.Spec.Provider.AzureKV
	if az == nil {
		return nil, fmt.Sprintf("%s uses %s %s, which is not an Azure Key Vault store", name, storeKind, store.Metadata.Name)
	}
	if az.AuthType != "" && az.AuthType != "WorkloadIdentity" {
		return nil, fmt.Sprintf("%s uses authType %s; kvinject uses workload identity only: give the identity a federated credential", name, az.AuthType)
	}
	cloudName, ok := environmentClouds[az.EnvironmentType]
	if !ok {
		return nil, fmt.Sprintf("%s: environmentType %s is not a cloud kvinject knows", name, az.EnvironmentType)
	}
	cloud, err := spec.LookupCloud(cloudName)
	if err != nil {
		return nil, err.Error()
	}
	vault, err := spec.ParseVault(strings.TrimSuffix(az.VaultURL, "/"), cloud)
	if err != nil {
		return nil, fmt.Sprintf("%s: store vault: %v", name, err)
	}
	c := &converted{es: es, store: storeKind + " " + store.Metadata.Name, cloud: cloud, vault: vault, tenant: az.TenantID}
	if sa := az.ServiceAccountRef; sa != nil {
		ns := sa.Namespace
		if ns == "" {
			ns = store.Metadata.Namespace
		}
		c.esoSA = ns + "/" + sa.Name
	}
	return c, ""
}

// dataFile maps one data entry (its secretKey and remoteRef) to a file, or
// says why it cannot move.
func dataFile(name, secretKey string, rr remoteRef, vault string, cloud spec.Cloud) (file, string) {
	key := rr.Key
	cert := false
	if rest, ok := strings.CutPrefix(key, "secret/"); ok {
		key = rest
	} else if rest, ok := strings.CutPrefix(key, "cert/"); ok {
		if rr.Property != "" || (rr.DecodingStrategy != "" && rr.DecodingStrategy != "None") {
			return file{}, fmt.Sprintf("%s key %q reads certificate %s with a property or a decodingStrategy, which a certificate object does not have: name the form instead, %s<file>: %s#fullchain (or #cert, #key, #chain, #ca, #pfx)", name, secretKey, rest, spec.AnnotationSecretPrefix, rest)
		}
		key, cert = rest, true
	} else if strings.HasPrefix(key, "key/") {
		return file{}, fmt.Sprintf("%s reads %s, a Key Vault key object: ESO gives its public key as a JWK, and Key Vault never releases the private key, so there is no secret to read: keep it with ESO, or store the public key as a secret", name, key)
	}
	if err := spec.ValidateFileName(secretKey); err != nil {
		return file{}, fmt.Sprintf("%s key %q cannot be a file name: %v", name, secretKey, err)
	}
	text, why := refTextOf(name, key, rr, cert)
	if why != "" {
		return file{}, why
	}
	ref, err := spec.ParseRef(text, vault, cloud)
	if err != nil {
		return file{}, fmt.Sprintf("%s key %q: %v", name, secretKey, err)
	}
	switch rr.DecodingStrategy {
	case "", "None":
		return file{key: secretKey, ref: ref, cert: cert}, ""
	case "Base64":
		return file{key: secretKey, ref: ref, b64: true}, ""
	}
	return file{}, fmt.Sprintf("%s key %q uses decodingStrategy %s: decode explicitly with a template and b64dec", name, secretKey, rr.DecodingStrategy)
}

// refTextOf writes a remoteRef as a kvinject reference: key[/version][#form
// or #property].
func refTextOf(name, key string, rr remoteRef, cert bool) (string, string) {
	text := key
	if rr.Version != "" {
		text += "/" + rr.Version
	}
	if cert {
		text += "#" + spec.CertFormFullchain
	}
	if p := rr.Property; p != "" {
		if strings.ContainsAny(p, `*?|#@\`) {
			return "", fmt.Sprintf("%s property %q uses gjson syntax beyond dot paths: name the property as a plain dot path", name, p)
		}
		text += "#" + p
	}
	return text, ""
}

// vaultAnnotation is the shortest way to write a vault: its name on its cloud.
func vaultAnnotation(vaultURL string, cloud spec.Cloud) string {
	host := strings.TrimPrefix(vaultURL, "https://")
	if name, ok := strings.CutSuffix(host, "."+cloud.VaultSuffix); ok {
		return name
	}
	return vaultURL
}

// refText writes a ref as short as the shared vault allows.
func refText(r spec.Ref, sharedVault string) string {
	if r.Vault != sharedVault {
		return r.String()
	}
	s := r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	if r.Path != "" {
		s += "#" + r.Path
	}
	return s
}

func containsPtr(cs []*converted, c *converted) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// closest suggests the Secret name most like a broken reference.
func closest(name string, candidates []string) string {
	if best, ok := suggest.Closest(name, candidates, 3); ok {
		return " (did you mean " + best + "?)"
	}
	return ""
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
