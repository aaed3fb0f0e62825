package esoconvert

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/internal/spec"
)

// Write prints the plan: for each workload, the pod template's annotations,
// the ServiceAccount's, the federated credential to create, and what to
// delete afterwards; then what cannot move and what is broken.
func Write(w io.Writer, res Result, o Options) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# kvinject convert-eso: %d workload(s) can move, %d thing(s) cannot, %d problem(s)\n", len(res.Moves), len(res.CannotMove), len(res.Problems))
	for _, m := range res.Moves {
		writeMove(&b, m, o)
	}
	if len(res.CannotMove) > 0 {
		b.WriteString("\n# Cannot move (stays with ESO, or needs a hand):\n")
		for _, s := range res.CannotMove {
			b.WriteString("# - " + s + "\n")
		}
	}
	if len(res.Problems) > 0 {
		b.WriteString("\n# Problems in the input:\n")
		for _, s := range res.Problems {
			b.WriteString("# - " + s + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeMove prints the steps of one workload's move.
func writeMove(b *strings.Builder, m Move, o Options) {
	fmt.Fprintf(b, "\n# ---- %s (ServiceAccount %s), replacing %s\n", m.Workload, m.ServiceAccount, strings.Join(m.From, ", "))
	writePodTemplate(b, m, o)
	if len(m.Annotations) == 0 && o.nodeMode() {
		// Nothing of the pod's own: the node pulls.
		writeNodeModePull(b, m, o, 2)
		return
	}
	writeServiceAccount(b, m, o)
	subject := "system:serviceaccount:" + m.Namespace + ":" + m.ServiceAccount
	fmt.Fprintf(b, "# 3. Let the pod's own token in (ESO's credential is for %s):\n", esoSubject(m.ESOServiceAcct))
	fmt.Fprintf(b, "az identity federated-credential create --name %s --identity-name %s --resource-group %s --issuer %s --subject %s --audiences %s\n",
		credentialName(m.Namespace, m.ServiceAccount), orPlaceholder(o.IdentityName, "\"$IDENTITY_NAME\""),
		orPlaceholder(o.ResourceGroup, "\"$RESOURCE_GROUP\""), orPlaceholder(o.Issuer, "\"$SERVICE_ACCOUNT_ISSUER\""), subject, spec.TokenAudience)
	step := 4
	if m.PullSecret != "" && o.nodeMode() {
		writeNodeModePull(b, m, o, step)
		return
	}
	if m.PullSecret != "" {
		writePodModePull(b, m, step)
		step++
	}
	when := "Once its pods run with kvinject"
	if len(m.Annotations) == 0 {
		when = "Once its pods pull through the provider"
	}
	fmt.Fprintf(b, "# %d. %s: delete %s and %s.\n", step, when, strings.Join(m.From, ", "), strings.Join(m.Secrets, ", "))
}

// writePodTemplate prints step 1, the pod template's annotations (the
// vault first, then the files by name), and what changes for the app.
func writePodTemplate(b *strings.Builder, m Move, o Options) {
	if len(m.Annotations) == 0 {
		b.WriteString("# 1. Its pod template needs no injection: it only pulls images.\n")
	} else {
		b.WriteString("# 1. Add to its pod template:\n")
		b.WriteString("metadata:\n  labels:\n    " + spec.LabelInject + ": \"true\"\n  annotations:\n")
	}
	keys := make([]string, 0, len(m.Annotations))
	for k := range m.Annotations {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == spec.AnnotationVault) != (keys[j] == spec.AnnotationVault) {
			return keys[i] == spec.AnnotationVault
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		fmt.Fprintf(b, "    %s: %s\n", k, yamlScalar(m.Annotations[k]))
	}
	notes := slices.Clone(m.Notes)
	if m.PullSecret != "" {
		notes = append(notes, pullNote(m, o))
	}
	if notes = append(notes, envDeliveryNotes(m, o)...); len(notes) > 0 {
		b.WriteString("#    What changes for the app:\n")
		for _, n := range notes {
			b.WriteString("#    - " + n + "\n")
		}
	}
}

// writeServiceAccount prints step 2, the ServiceAccount's annotations.
func writeServiceAccount(b *strings.Builder, m Move, o Options) {
	fmt.Fprintf(b, "# 2. Annotate ServiceAccount %s/%s:\n", m.Namespace, m.ServiceAccount)
	clientID := m.ClientID
	if clientID == "" {
		clientID = "<client id of the identity ESO uses>"
	}
	b.WriteString("metadata:\n  annotations:\n")
	fmt.Fprintf(b, "    %s: %s\n", spec.SAAnnotationClientID, clientID)
	if m.TenantID != "" {
		fmt.Fprintf(b, "    %s: %s\n", spec.SAAnnotationTenantID, m.TenantID)
	}
	if m.PullSecret != "" && !o.nodeMode() {
		fmt.Fprintf(b, "    %s: %s\n", spec.SAAnnotationPullSecret, m.PullSecret)
	}
	if m.ServiceAccount == "default" {
		b.WriteString("#    (it uses the namespace's default ServiceAccount: a dedicated one keeps other pods from this identity)\n")
	}
}

// writePodModePull prints the step that sets up the kubelet's credential
// provider for the pods' own pull secret.
func writePodModePull(b *strings.Builder, m Move, step int) {
	registries := strings.Join(m.Registries, ",")
	if registries == "" {
		registries = "<registry host:port>"
	}
	fmt.Fprintf(b, "# %d. Once per cluster, on every node that pulls from %s (docs/pull-credentials.md): the kubelet's credential provider\n", step, registries)
	tenant := ""
	if m.TenantID != "" {
		tenant = " --tenant-id " + m.TenantID
	}
	fmt.Fprintf(b, "kvinject credential-provider-config --match-images %s%s > /etc/kubernetes/kvinject-credential-provider.yaml\n", registries, tenant)
	b.WriteString("#    kubelet flags: --image-credential-provider-config=/etc/kubernetes/kvinject-credential-provider.yaml --image-credential-provider-bin-dir=<the directory holding kvinject-credential-provider>\n")
	if len(m.Annotations) == 0 {
		b.WriteString("#    and, since these pods are not injected: kubectl apply -k manifests/pull-credentials\n")
	}
}

// pullNote says how the workload's images are pulled once its
// imagePullSecrets are gone.
func pullNote(m Move, o Options) string {
	if o.nodeMode() {
		return fmt.Sprintf("remove imagePullSecrets %s: on Kubernetes 1.%d the kubelet sends credential providers no pod token, so kvinject-credential-provider's node mode reads %s as the node identity: every pod on the configured nodes can pull from %s, as with a node-wide pull secret",
			strings.Join(m.PullSecretNames, ", "), o.KubeMinor, m.PullSecret, registriesOf(m))
	}
	return fmt.Sprintf("remove imagePullSecrets %s: the kubelet pulls with kvinject-credential-provider, which reads %s (the ServiceAccount's %s) with the pod's own token",
		strings.Join(m.PullSecretNames, ", "), m.PullSecret, spec.SAAnnotationPullSecret)
}

func registriesOf(m Move) string {
	if len(m.Registries) == 0 {
		return "<registry host:port>"
	}
	return strings.Join(m.Registries, ",")
}

// writeNodeModePull writes the steps of node mode from step on, then the
// deletion: a node identity, its federated credential for the
// kvinject-node-identity DaemonSet, the DaemonSet, the kubelet's config.
func writeNodeModePull(b *strings.Builder, m Move, o Options, step int) {
	const nodeSubject = "system:serviceaccount:kvinject-system:kvinject-node-identity"
	registries := registriesOf(m)
	vault, _, _ := strings.Cut(strings.TrimPrefix(m.PullSecret, "https://"), "/")
	fmt.Fprintf(b, "# %d. Once per node pool that pulls from %s (docs/pull-credentials.md, node mode): a node identity (a managed\n", step, registries)
	fmt.Fprintf(b, "#    identity of its own, one per pool), with Key Vault Secrets User on %s (or on the secret alone)\n", vault)
	b.WriteString("#    and a federated credential for the kvinject-node-identity DaemonSet's ServiceAccount:\n")
	fmt.Fprintf(b, "az identity federated-credential create --name kvinject-node-identity --identity-name %s --resource-group %s --issuer %s --subject %s --audiences %s\n",
		"\"$NODE_IDENTITY_NAME\"", orPlaceholder(o.ResourceGroup, "\"$RESOURCE_GROUP\""), orPlaceholder(o.Issuer, "\"$SERVICE_ACCOUNT_ISSUER\""), nodeSubject, spec.TokenAudience)
	step++
	fmt.Fprintf(b, "# %d. The DaemonSet whose pod on each node holds that ServiceAccount's token (no RBAC, no host path; restricted-v2 on OpenShift):\n", step)
	b.WriteString("kubectl apply -k manifests/node-identity\n")
	step++
	tenant := m.TenantID
	if tenant == "" {
		tenant = "<tenant id>"
	}
	fmt.Fprintf(b, "# %d. On every node of the pool: the kubelet's credential provider in node mode\n", step)
	fmt.Fprintf(b, "kvinject credential-provider-config --kube-version 1.%d --node-identity \"$NODE_IDENTITY_CLIENT_ID\" --tenant-id %s --pull-secret %s > /etc/kubernetes/kvinject-credential-provider.yaml\n",
		o.KubeMinor, tenant, shellQuote(firstRegistry(m)+"="+m.PullSecret))
	b.WriteString("#    kubelet flags: --image-credential-provider-config=/etc/kubernetes/kvinject-credential-provider.yaml --image-credential-provider-bin-dir=<the directory holding kvinject-credential-provider>\n")
	b.WriteString("#    (OpenShift: a MachineConfig writes the binary and the config, a KubeletConfig cannot set these flags: docs/pull-credentials.md)\n")
	if len(m.Registries) > 1 {
		b.WriteString("#    one --pull-secret per registry: " + registries + "\n")
	}
	step++
	when := "Once its pods run with kvinject"
	if len(m.Annotations) == 0 {
		when = "Once its pods pull through the provider"
	}
	fmt.Fprintf(b, "# %d. %s: delete %s and %s.\n", step, when, strings.Join(m.From, ", "), strings.Join(m.Secrets, ", "))
}

func firstRegistry(m Move) string {
	if len(m.Registries) == 0 {
		return "<registry host:port>"
	}
	return m.Registries[0]
}

// shellQuote quotes s for a POSIX shell when it holds more than safe characters.
func shellQuote(s string) string {
	if strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/=_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

func esoSubject(sa string) string {
	if sa == "" {
		return "its own ServiceAccount"
	}
	ns, name, _ := strings.Cut(sa, "/")
	return "system:serviceaccount:" + ns + ":" + name
}

// credentialName is a federated credential name Azure accepts: 3-120
// characters of letters, digits, '-' and '_'.
func credentialName(ns, sa string) string {
	n := "kvinject-" + ns + "-" + sa
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, n)
	if len(n) > 120 {
		n = n[:120]
	}
	return n
}

func orPlaceholder(v, placeholder string) string {
	if v == "" {
		return placeholder
	}
	return v
}

// yamlScalar writes a value as YAML would, quoted only when needed.
func yamlScalar(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Sprintf("%q", s)
	}
	return strings.TrimSuffix(string(b), "\n")
}
