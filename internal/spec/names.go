package spec

import "time"

// Annotations and labels a user sets. The contract (docs/annotations.md)
// documents each of them; nothing else under Prefix is accepted.
const (
	// Prefix is the domain of every kvinject annotation and label.
	Prefix = "kvinject.io/"

	// LabelInject opts a pod in. The webhook configuration selects on it, so
	// no other pod ever reaches the webhook.
	LabelInject = Prefix + "inject"

	// AnnotationVault names the vault refs resolve against: a vault name
	// ("homelab-kv", with the cloud's suffix) or an https:// URL. Default:
	// the webhook's --default-vault; none is a denial.
	AnnotationVault = Prefix + "vault"
	// AnnotationClientID is the identity's client id (a GUID). Default: the
	// ServiceAccount's SAAnnotationClientID; none is a denial.
	AnnotationClientID = Prefix + "client-id"
	// AnnotationTenantID is the Entra ID tenant (a GUID or domain). Default:
	// the ServiceAccount's SAAnnotationTenantID, else the webhook's
	// --tenant-id; none is a denial.
	AnnotationTenantID = Prefix + "tenant-id"
	// AnnotationTokenExpiration is the projected token's lifetime in
	// seconds, MinTokenExpirationSeconds to MaxTokenExpirationSeconds.
	// Default: DefaultTokenExpirationSeconds.
	AnnotationTokenExpiration = Prefix + "token-expiration"
	// AnnotationMountPath is where the files appear, read-only, in the
	// target containers: a clean absolute path other than /. Default:
	// DefaultMountPath.
	AnnotationMountPath = Prefix + "mount-path"
	// AnnotationContainers lists, comma-separated, the containers and init
	// containers that get the files. Default: every regular container.
	AnnotationContainers = Prefix + "containers"
	// AnnotationRefresh is how often (a Go duration, at least MinRefresh)
	// the kvinject-refresh sidecar re-reads the secrets and, when one has a
	// new version, rewrites the files. Default: none, the files are written
	// once when the pod starts. Needs Kubernetes MinSidecarVersion.
	AnnotationRefresh = Prefix + "refresh"

	// AnnotationCache says whether the agent and the refresh sidecar ask
	// the cluster cache (docs/cache.md) before Azure: CacheOn ("true": the
	// cache, or Azure directly when the cache cannot be reached),
	// CacheRequired ("required": the cache only) or CacheOff ("false").
	// Default: the webhook's --cache-by-default, else "false". The cache
	// is there only when the webhook has --cache-url: without it "true"
	// reads from Azure directly and "required" is a denial.
	AnnotationCache = Prefix + "cache"

	// AnnotationAgentResourcePrefix + RESOURCE + "-" + KIND ("cpu-request",
	// "memory-limit"...): the kvinject-agent init container's request or
	// limit of that resource, a Kubernetes quantity; AnnotationRefresh-
	// ResourcePrefix the same for the kvinject-refresh sidecar. Default: the
	// webhook's. Allowed only up to the webhook's --max-injected-cpu and
	// --max-injected-memory; without them, denied.
	AnnotationAgentResourcePrefix   = Prefix + "agent-"
	AnnotationRefreshResourcePrefix = Prefix + "refresh-"

	// AnnotationSecretPrefix + FILE: the file holds a secret's value or one
	// JSON property of it: "NAME[/VERSION][#PATH]" or a full secret URL.
	AnnotationSecretPrefix = Prefix + "secret-"
	// AnnotationTemplatePrefix + FILE: the file is rendered from a Go
	// text/template in which {{ secret "REF" }} gives a value.
	AnnotationTemplatePrefix = Prefix + "template-"
	// AnnotationPermsPrefix + FILE: the file's octal mode, read bits only
	// ("0400", "0440", "0444"). Default: 0400 when the app's user is known
	// at admission, else 0444.
	AnnotationPermsPrefix = Prefix + "perms-"

	// AnnotationEnvPrefix + VAR: the containers that declare VAR, else
	// the target containers, get the environment variable VAR, a C
	// identifier, from a secret reference like AnnotationSecretPrefix's:
	// valueFrom.fileKeyRef on EnvFileName in the secrets volume where
	// EnvFiles cannot be dropped (DeliveryFileKeyRef), else through the exec
	// wrapper (DeliveryExec).
	AnnotationEnvPrefix = Prefix + "env-"
	// AnnotationEntrypointPrefix + CONTAINER: a JSON array of strings, the
	// image's ENTRYPOINT followed by its CMD (ENTRYPOINT alone when the
	// container has args), for a container the exec wrapper runs that has
	// no command: the webhook never asks a registry. `kvinject entrypoint
	// IMAGE` prints it.
	AnnotationEntrypointPrefix = Prefix + "entrypoint-"

	// AnnotationStatus is set by the webhook, never by users, to
	// StatusInjected on every pod it injects.
	AnnotationStatus = Prefix + "status"
	// StatusInjected is AnnotationStatus's value on an injected pod.
	StatusInjected = "injected"
	// AnnotationStatusEnv is set by the webhook, never by users, beside
	// AnnotationStatus on a pod with AnnotationEnvPrefix variables: how
	// they are delivered, DeliveryFileKeyRef or DeliveryExec.
	AnnotationStatusEnv = Prefix + "status-env"
)

// How env variables reach the containers (--env-delivery).
const (
	// DeliveryAuto picks DeliveryFileKeyRef where the API server keeps the
	// field and every kubelet reads it, else DeliveryExec.
	DeliveryAuto = "auto"
	// DeliveryFileKeyRef: env[].valueFrom.fileKeyRef (EnvFiles).
	DeliveryFileKeyRef = "file-key-ref"
	// DeliveryExec: the exec wrapper ExecCommand is the container's command.
	DeliveryExec = "exec"
)

// ServiceAccount annotations shared with Azure Workload Identity, so that
// existing ServiceAccounts work unchanged.
const (
	// SAAnnotationClientID on a ServiceAccount names its identity's client
	// id, for pods without AnnotationClientID.
	SAAnnotationClientID = "azure.workload.identity/client-id"
	// SAAnnotationTenantID on a ServiceAccount names its identity's tenant,
	// for pods without AnnotationTenantID.
	SAAnnotationTenantID = "azure.workload.identity/tenant-id"
)

// ServiceAccount annotations of kvinject itself.
const (
	// SAAnnotationPullSecret on a ServiceAccount names the Key Vault secret
	// holding the registry credential its pods pull images with, through
	// the kubelet credential provider kvinject-credential-provider: a
	// reference like AnnotationSecretPrefix's ("NAME[/VERSION][#PATH]",
	// read from the provider's --default-vault, or a full secret URL). The
	// value is a dockerconfigjson, "user:password" or JSON
	// {"username","password"}. Default: none, and the kubelet does not call
	// the provider for the ServiceAccount's pods.
	SAAnnotationPullSecret = Prefix + "pull-secret"
)

// Names of what the webhook adds to a pod.
const (
	// AgentContainerName is the init container the webhook adds, first.
	AgentContainerName = "kvinject-agent"
	// RefreshContainerName is the native sidecar (an init container with
	// restartPolicy Always) the webhook adds after the agent when a pod
	// sets AnnotationRefresh.
	RefreshContainerName = "kvinject-refresh"
	// AgentCommand is the agent binary's path in the kvinject image.
	AgentCommand = "/kvinject-agent"
	// SecretsVolumeName is the memory-backed emptyDir holding the files.
	SecretsVolumeName = "kvinject-secrets"
	// TokenVolumeName is the projected ServiceAccount token for Entra ID.
	TokenVolumeName = "kvinject-token"

	// BinVolumeName is the memory-backed emptyDir into which the agent
	// copies the exec wrapper, mounted read-only at BinMountPath in the
	// containers it runs.
	BinVolumeName = "kvinject-bin"
	// BinMountPath is where BinVolumeName appears, in the agent and in the
	// wrapped containers.
	BinMountPath = "/var/run/kvinject.io/bin"
	// ExecCommand is the exec wrapper's path in the wrapped containers.
	ExecCommand = BinMountPath + "/kvinject-exec"
	// ExecSource is the exec wrapper's path in the kvinject image, which the
	// agent copies to ExecCommand.
	ExecSource = "/kvinject-exec"

	// EnvFileName is the file in SecretsVolumeName holding the variables of
	// AnnotationEnvPrefix annotations, in the kubelet's env file format.
	EnvFileName = ".kvinject-env"

	// TokenMountPath is where the agent, and only the agent, sees the
	// projected token; app containers never get it.
	TokenMountPath = "/var/run/secrets/kvinject.io/token"
	// TokenFileName is the token's file name in TokenVolumeName.
	TokenFileName = "azure-identity-token"

	// APITokenMountPath is where Kubernetes mounts a container's API
	// token. The agent's projected token volume covers it, so the agent
	// holds no token the API server accepts.
	APITokenMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

	// DefaultMountPath is where the files appear without AnnotationMountPath.
	DefaultMountPath = "/var/run/secrets/kvinject"

	// AgentFallbackUser is the uid (and gid) the agent runs as when the
	// app's user is not known at admission, or is root: the image's own
	// non-root user, so the agent never inherits a pod's uid 0.
	AgentFallbackUser = 65532

	// TokenAudience is the audience Entra ID requires of federated tokens.
	TokenAudience = "api://AzureADTokenExchange"

	// Token lifetimes AnnotationTokenExpiration accepts, and its default.
	DefaultTokenExpirationSeconds = 3600
	MinTokenExpirationSeconds     = 3600
	MaxTokenExpirationSeconds     = 86400
)

// Environment variables of the agent container.
const (
	// EnvSpec holds the validated spec as JSON (Spec.Encode).
	EnvSpec = "KVINJECT_SPEC"
	// The workload identity variables, as Azure Workload Identity names them.
	EnvClientID           = "AZURE_CLIENT_ID"
	EnvTenantID           = "AZURE_TENANT_ID"
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// Refresh limits.
const (
	// MinRefresh is the shortest AnnotationRefresh.
	MinRefresh = time.Minute
	// MinSidecarMinor is the Kubernetes 1.x minor version from which native
	// sidecars (init containers with restartPolicy Always) are on by default.
	MinSidecarMinor = 29
	// MinEnvFilesMinor is the Kubernetes 1.x minor version from which the
	// kubelet reads env[].valueFrom.fileKeyRef by default (EnvFiles, beta).
	MinEnvFilesMinor = 35
)

// File name limits from the contract.
const (
	// MaxFileNameLength bounds a FILE in the per-file annotations.
	MaxFileNameLength = 50
	// MaxFiles bounds the files of one pod.
	MaxFiles = 50
	// MaxEnv bounds the environment variables of one pod, and
	// MaxEnvNameLength a variable's name.
	MaxEnv           = 50
	MaxEnvNameLength = 128
)
