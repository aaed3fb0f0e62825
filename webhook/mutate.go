package webhook

import (
	"path"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/internal/spec"
)

// Names used only when Options ask for them (egress through a proxy).
const (
	caVolumeName   = "kvinject-ca"
	caMountPath    = "/var/run/secrets/kvinject.io/ca"
	envHTTPSProxy  = "HTTPS_PROXY"
	envNoProxy     = "NO_PROXY"
	envSSLCertFile = "SSL_CERT_FILE"
)

// Mutate injects kvinject into pod, or returns a *Denial saying why it
// cannot, leaving pod untouched. It is a pure function of its arguments;
// mutating an injected pod again changes nothing.
func Mutate(pod *corev1.Pod, sa ServiceAccount, o *Options) error {
	a, _, err := plan(pod, sa, o)
	if err != nil {
		return err
	}
	a.apply(pod)
	return nil
}

// Patch returns the JSON patch operations that inject kvinject into the raw
// form of pod (the object the API server sent, which pod was decoded from),
// or a *Denial. pod is not changed. Applying the operations to the raw
// object gives exactly what Mutate makes of pod, keeping every field kvinject
// does not own, known to this build or not. No operations: already injected.
func Patch(pod *corev1.Pod, sa ServiceAccount, o *Options) ([]jsonpatch.Operation, error) {
	a, _, err := plan(pod, sa, o)
	if err != nil {
		return nil, err
	}
	return a.patch(pod), nil
}

// Admission is the webhook's answer to an admitted pod.
type Admission struct {
	// Patch is what Patch returns: none when the pod is injected already.
	Patch []jsonpatch.Operation
	// Warnings are for the pod's creator: annotations that ask for what
	// this cluster does not run.
	Warnings []string
}

// Admit is the admission of pod: the patch (as Patch returns it) and the
// warnings, or a *Denial, from one reading of the annotations. Like Mutate,
// it is a pure function of its arguments.
func Admit(pod *corev1.Pod, sa ServiceAccount, o *Options) (Admission, error) {
	a, warnings, err := plan(pod, sa, o)
	if err != nil {
		return Admission{}, err
	}
	return Admission{Patch: a.patch(pod), Warnings: warnings}, nil
}

// plan parses the pod's annotations and says what kvinject adds to it,
// and what to warn the pod's creator of.
func plan(pod *corev1.Pod, sa ServiceAccount, o *Options) (*additions, []string, error) {
	in, err := parse(pod, sa, o)
	if err != nil {
		return nil, nil, err
	}
	agent, err := agentContainer(in, o)
	if err != nil {
		return nil, nil, err
	}
	a := &additions{
		annotations: map[string]string{spec.AnnotationStatus: spec.StatusInjected},
		volumes:     []corev1.Volume{secretsVolume(o), tokenVolume(in.tokenExpiration)},
		// The agent runs first, so that init containers listed in
		// kvinject.io/containers find their files too.
		initContainers: []corev1.Container{agent},
		targets:        in.targets,
		env:            map[string][]corev1.EnvVar{},
		edits:          in.edits,
	}
	// A container that only takes env variables does not mount the files:
	// the kubelet reads the env file from the volume itself.
	if len(in.spec.Files) > 0 {
		a.mounts = []corev1.VolumeMount{{Name: spec.SecretsVolumeName, MountPath: in.spec.MountPath, ReadOnly: true}}
	}
	for name, vars := range in.envTo {
		for _, v := range vars {
			a.env[name] = append(a.env[name], envEntry(v, in.delivery))
		}
	}
	if len(in.envTo) > 0 {
		a.annotations[spec.AnnotationStatusEnv] = in.delivery
	}
	if in.delivery == spec.DeliveryExec && len(in.envTo) > 0 {
		// The wrapper reads the env file itself, from the wrapper's volume.
		a.volumes = append(a.volumes, binVolume())
		a.wrapMounts = []corev1.VolumeMount{
			{Name: spec.SecretsVolumeName, MountPath: in.spec.MountPath, ReadOnly: true},
			{Name: spec.BinVolumeName, MountPath: spec.BinMountPath, ReadOnly: true},
		}
	}
	if oc := in.onChange; oc != nil {
		a.volumes = append(a.volumes, onChangeVolume())
		if in.spec.OnChange.Action == spec.OnChangeRestart && indexOf(a.volumes, spec.BinVolumeName, volumeName) < 0 {
			a.volumes = append(a.volumes, binVolume())
		}
		a.extraMounts, a.probes, a.checkEdits, a.shareProcessNamespace = oc.mounts, oc.probes, oc.checkEdits, oc.shareProcessNamespace
	}
	if in.refresh > 0 {
		a.initContainers = append(a.initContainers, refreshContainer(agent, in))
	}
	if o.caConfigMap != "" {
		a.volumes = append(a.volumes, caVolume(o))
	}
	return a, in.warnings, nil
}

// refreshContainer is the kvinject-refresh native sidecar: the agent's
// binary, environment, mounts and security context, in refresh mode. It
// starts after kvinject-agent has written the files and runs as long as the
// pod.
func refreshContainer(agent corev1.Container, in *injection) corev1.Container {
	c := *agent.DeepCopy()
	c.Name = spec.RefreshContainerName
	c.Args = append(c.Args, "--refresh="+in.refresh.String())
	c.Resources = *in.refreshResources.DeepCopy()
	c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	return c
}

func agentContainer(in *injection, o *Options) (corev1.Container, error) {
	specJSON, err := in.spec.Encode()
	if err != nil {
		return corev1.Container{}, err
	}
	env := []corev1.EnvVar{
		{Name: spec.EnvClientID, Value: in.spec.Identity.ClientID},
		{Name: spec.EnvTenantID, Value: in.spec.Identity.TenantID},
		{Name: spec.EnvFederatedTokenFile, Value: path.Join(spec.TokenMountPath, spec.TokenFileName)},
		{Name: spec.EnvAuthorityHost, Value: o.authorityHost},
		{Name: spec.EnvSpec, Value: specJSON},
	}
	mounts := []corev1.VolumeMount{
		{Name: spec.SecretsVolumeName, MountPath: in.spec.MountPath},
		{Name: spec.TokenVolumeName, MountPath: spec.TokenMountPath, ReadOnly: true},
		// The agent needs no Kubernetes API token. A mount at the API
		// token's path keeps the ServiceAccount admission plugin from adding
		// one (it skips containers that have a mount there), and so from
		// changing the pod after the webhook, which would call it again.
		{Name: spec.TokenVolumeName, MountPath: spec.APITokenMountPath, ReadOnly: true},
	}
	oc := in.spec.OnChange
	if in.spec.EnvDelivery == spec.DeliveryExec || oc != nil && oc.Action == spec.OnChangeRestart {
		mounts = append(mounts, corev1.VolumeMount{Name: spec.BinVolumeName, MountPath: spec.BinMountPath})
	}
	if oc != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: spec.OnChangeVolumeName, MountPath: spec.OnChangeStateDir})
	}
	if o.AgentHTTPSProxy != "" {
		env = append(env, corev1.EnvVar{Name: envHTTPSProxy, Value: o.AgentHTTPSProxy})
	}
	if o.AgentNoProxy != "" {
		env = append(env, corev1.EnvVar{Name: envNoProxy, Value: o.AgentNoProxy})
	}
	if o.caConfigMap != "" {
		env = append(env, corev1.EnvVar{Name: envSSLCertFile, Value: path.Join(caMountPath, o.caKey)})
		mounts = append(mounts, corev1.VolumeMount{Name: caVolumeName, MountPath: caMountPath, ReadOnly: true})
	}
	sc := &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		RunAsUser:                in.agentUser,
		RunAsGroup:               in.agentGroup,
	}
	return corev1.Container{
		Name:  spec.AgentContainerName,
		Image: o.AgentImage,
		// The agent's own small binary, in the same image as the webhook.
		Command: []string{spec.AgentCommand},
		Args:    []string{"--cloud=" + o.Cloud.Name},
		Env:     env,
		// Every field the API server would default is set here, so that
		// mutating an admitted pod again finds nothing to change.
		Resources:                *in.agentResources.DeepCopy(),
		VolumeMounts:             mounts,
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		SecurityContext:          sc,
	}, nil
}

func secretsVolume(o *Options) corev1.Volume {
	limit := o.SecretsSizeLimit.DeepCopy()
	return corev1.Volume{Name: spec.SecretsVolumeName, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &limit},
	}}
}

func tokenVolume(expiration int64) corev1.Volume {
	return corev1.Volume{Name: spec.TokenVolumeName, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          spec.TokenAudience,
				ExpirationSeconds: ptr.To(expiration),
				Path:              spec.TokenFileName,
			}}},
			DefaultMode: ptr.To(corev1.ProjectedVolumeSourceDefaultMode),
		},
	}}
}

func caVolume(o *Options) corev1.Volume {
	return corev1.Volume{Name: caVolumeName, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: o.caConfigMap},
			Items:                []corev1.KeyToPath{{Key: o.caKey, Path: o.caKey}},
			DefaultMode:          ptr.To(corev1.ConfigMapVolumeSourceDefaultMode),
		},
	}}
}
