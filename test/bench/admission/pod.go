package main

import (
	"encoding/json"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	benchNamespace = "bench"
	benchSA        = "orders-api"
	benchClientID  = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	benchTenant    = "11111111-2222-3333-4444-555555555555"
)

// Opt-ins: each injector's way of asking for injection, applied to the same
// base pod.
const (
	optInKvinject = "kvinject"  // kvinject's label and annotations (the floor gets them too)
	optInAzwi     = "azwi"      // Azure Workload Identity's pod label
	optInVault    = "vault-k8s" // the Vault Agent Injector's annotations
)

// benchPod is a Deployment's pod as the API server sends it to a mutating
// webhook: generateName and no name, defaults applied, the ServiceAccount
// admission plugin's kube-api-access volume, an owner ReplicaSet, two
// containers and an init container with env, probes, resources and mounts,
// plus one injector's opt-in (see optIn): for kvinject its label and
// annotations (a vault, two secret properties and a template with its mode);
// for Azure Workload Identity its label (the ServiceAccount carries the
// client ID); for the Vault Agent Injector its annotations (a role, one
// secret and a template for it).
func benchPod(i int, optIn string) *corev1.Pod {
	hash := fmt.Sprintf("7d9c8b6f%02x", i%256)
	res := func(cpu, mem, cpuLim, memLim string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuLim), corev1.ResourceMemory: resource.MustParse(memLim)},
		}
	}
	probe := func(path string, port int32, delay int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(port), Scheme: corev1.URISchemeHTTP,
			}},
			InitialDelaySeconds: delay, TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3,
		}
	}
	apiAccess := corev1.VolumeMount{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}
	sc := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	container := func(name, image string) corev1.Container {
		return corev1.Container{
			Name: name, Image: image,
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
			SecurityContext:          sc.DeepCopy(),
		}
	}

	migrate := container("migrate", "registry.example/orders/migrate:v2.14.1")
	migrate.Args = []string{"--database-url=$(DATABASE_URL)", "--lock-timeout=30s", "up"}
	migrate.Env = []corev1.EnvVar{
		{Name: "DATABASE_URL", Value: "postgres://orders-db.orders.svc:5432/orders?sslmode=require"},
		{Name: "DB_USER_FILE", Value: "/var/run/secrets/kvinject/username"},
		{Name: "DB_PASSWORD_FILE", Value: "/var/run/secrets/kvinject/password"},
	}
	migrate.Resources = res("50m", "64Mi", "500m", "128Mi")
	migrate.VolumeMounts = []corev1.VolumeMount{apiAccess}

	app := container("orders-api", "registry.example/orders/api:v2.14.1")
	app.Args = []string{"serve", "--config=/etc/orders/config.yaml", "--listen=:8080", "--metrics=:9090"}
	app.Ports = []corev1.ContainerPort{
		{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
	}
	app.Env = []corev1.EnvVar{
		{Name: "GOMAXPROCS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1")}}},
		{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1")}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: "LOG_LEVEL", Value: "info"},
		{Name: "LOG_FORMAT", Value: "json"},
		{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability.svc:4317"},
		{Name: "OTEL_SERVICE_NAME", Value: "orders-api"},
		{Name: "DB_HOST", Value: "orders-db.orders.svc"},
		{Name: "DB_CREDENTIALS_DIR", Value: "/var/run/secrets/kvinject"},
	}
	app.Resources = res("250m", "256Mi", "1", "512Mi")
	app.LivenessProbe = probe("/healthz", 8080, 10)
	app.ReadinessProbe = probe("/readyz", 8080, 5)
	app.StartupProbe = probe("/healthz", 8080, 0)
	app.StartupProbe.FailureThreshold = 30
	app.VolumeMounts = []corev1.VolumeMount{
		{Name: "config", MountPath: "/etc/orders", ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
		apiAccess,
	}

	logs := container("log-shipper", "registry.example/fluent-bit:3.2.4")
	logs.Args = []string{"--config=/fluent-bit/etc/fluent-bit.yaml"}
	logs.Env = []corev1.EnvVar{
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"}}},
		{Name: "FLUENT_FORWARD_HOST", Value: "fluentd.logging.svc"},
		{Name: "FLUENT_FORWARD_PORT", Value: "24224"},
	}
	logs.Resources = res("20m", "32Mi", "200m", "64Mi")
	logs.Ports = []corev1.ContainerPort{{Name: "fb-metrics", ContainerPort: 2020, Protocol: corev1.ProtocolTCP}}
	logs.LivenessProbe = probe("/api/v1/health", 2020, 10)
	logs.VolumeMounts = []corev1.VolumeMount{{Name: "tmp", MountPath: "/var/log/app", ReadOnly: true}, apiAccess}

	labels := map[string]string{
		"app.kubernetes.io/name":      "orders-api",
		"app.kubernetes.io/instance":  "orders-api",
		"app.kubernetes.io/version":   "2.14.1",
		"app.kubernetes.io/component": "api",
		"app.kubernetes.io/part-of":   "orders",
		"pod-template-hash":           hash,
	}
	annotations := map[string]string{
		"kubectl.kubernetes.io/restartedAt": "2026-01-12T09:30:00Z",
		"prometheus.io/scrape":              "true",
		"prometheus.io/port":                "9090",
	}
	switch optIn {
	case optInKvinject:
		labels["kvinject.io/inject"] = "true"
		annotations["kvinject.io/vault"] = "homelab-kv"
		annotations["kvinject.io/secret-username"] = "app-pgsql#username"
		annotations["kvinject.io/secret-password"] = "app-pgsql#password"
		annotations["kvinject.io/template-config.yaml"] = "db:\n  user: {{ secret \"app-pgsql#username\" }}\n  password: {{ secret \"app-pgsql#password\" }}\napi_key: {{ secret \"orders-api-key\" }}\n"
		annotations["kvinject.io/perms-config.yaml"] = "0440"
		annotations["kvinject.io/containers"] = "migrate,orders-api"
	case optInAzwi:
		labels["azure.workload.identity/use"] = "true"
	case optInVault:
		annotations["vault.hashicorp.com/agent-inject"] = "true"
		annotations["vault.hashicorp.com/role"] = "orders-api"
		annotations["vault.hashicorp.com/agent-inject-secret-config.yaml"] = "secret/data/orders/app-pgsql"
		annotations["vault.hashicorp.com/agent-inject-template-config.yaml"] = "{{- with secret \"secret/data/orders/app-pgsql\" -}}\ndb:\n  user: {{ .Data.data.username }}\n  password: {{ .Data.data.password }}\n{{- end }}\n"
	default:
		panic("unknown opt-in " + optIn)
	}

	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "orders-api-" + hash + "-",
			Labels:       labels,
			Annotations:  annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "orders-api-" + hash,
				UID: types.UID(fmt.Sprintf("5f0c6a1e-8a47-4c1b-9d3e-%012x", i)), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			InitContainers:                []corev1.Container{migrate},
			Containers:                    []corev1.Container{app, logs},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			DNSPolicy:                     corev1.DNSClusterFirst,
			ServiceAccountName:            benchSA,
			DeprecatedServiceAccount:      benchSA,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](10001), RunAsGroup: ptr.To[int64](10001), FSGroup: ptr.To[int64](10001),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			SchedulerName: corev1.DefaultSchedulerName,
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
			},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway,
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "orders-api"}},
			}},
			Priority:           ptr.To[int32](0),
			EnableServiceLinks: ptr.To(true),
			PreemptionPolicy:   ptr.To(corev1.PreemptLowerPriority),
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "orders-api-config"}, DefaultMode: ptr.To[int32](0o644),
				}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
							Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
							Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
						}}}},
					},
					DefaultMode: ptr.To[int32](0o644),
				}}},
			},
		},
	}
}

// benchReview is a Pod CREATE AdmissionReview for benchPod(i, optIn), as JSON.
func benchReview(i int, optIn string) ([]byte, error) {
	pod, err := json.Marshal(benchPod(i, optIn))
	if err != nil {
		return nil, err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             types.UID(fmt.Sprintf("0b7c2f4e-1d2a-4e8b-a1f3-%012x", i)),
			Kind:            metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:        metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			RequestKind:     &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			RequestResource: &metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace:       benchNamespace,
			Operation:       admissionv1.Create,
			UserInfo:        authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller", UID: "3c8e1f0a-5b6d-4e7f-8a9b-0c1d2e3f4a5b", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}},
			Object:          runtime.RawExtension{Raw: pod},
			DryRun:          ptr.To(false),
			Options:         runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		},
	}
	return json.Marshal(review)
}
