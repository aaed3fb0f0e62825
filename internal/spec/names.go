package spec

// Annotations and labels a user sets. The contract (docs/annotations.md)
// documents each of them; nothing else under Prefix is accepted.
const (
	// Prefix is the domain of every kvinject annotation and label.
	Prefix = "kvinject.io/"

	// LabelInject opts a pod in. The webhook configuration selects on it, so
	// no other pod ever reaches the webhook.
	LabelInject = Prefix + "inject"

	AnnotationVault           = Prefix + "vault"
	AnnotationClientID        = Prefix + "client-id"
	AnnotationTenantID        = Prefix + "tenant-id"
	AnnotationTokenExpiration = Prefix + "token-expiration"
	AnnotationMountPath       = Prefix + "mount-path"
	AnnotationContainers      = Prefix + "containers"

	// Per-file annotations: the file name follows the prefix.
	AnnotationSecretPrefix   = Prefix + "secret-"
	AnnotationTemplatePrefix = Prefix + "template-"
	AnnotationPermsPrefix    = Prefix + "perms-"

	// AnnotationStatus is set by the webhook, never by users.
	AnnotationStatus = Prefix + "status"
	StatusInjected   = "injected"
)

// ServiceAccount annotations shared with Azure Workload Identity, so that
// existing ServiceAccounts work unchanged.
const (
	SAAnnotationClientID = "azure.workload.identity/client-id"
	SAAnnotationTenantID = "azure.workload.identity/tenant-id"
)

// Names of what the webhook adds to a pod.
const (
	AgentContainerName = "kvinject-agent"
	// AgentCommand is the agent binary's path in the kvinject image.
	AgentCommand = "/kvinject-agent"
	SecretsVolumeName  = "kvinject-secrets"
	TokenVolumeName    = "kvinject-token"

	// TokenMountPath is where the agent, and only the agent, sees the
	// projected token; app containers never get it.
	TokenMountPath = "/var/run/secrets/kvinject.io/token"
	TokenFileName  = "azure-identity-token"

	// APITokenMountPath is where Kubernetes mounts a container's API
	// token. The agent's projected token volume covers it, so the agent
	// holds no token the API server accepts.
	APITokenMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

	DefaultMountPath = "/var/run/secrets/kvinject"

	// TokenAudience is the audience Entra ID requires of federated tokens.
	TokenAudience = "api://AzureADTokenExchange"

	DefaultTokenExpirationSeconds = 3600
	MinTokenExpirationSeconds     = 3600
	MaxTokenExpirationSeconds     = 86400
)

// Environment variables of the agent container.
const (
	EnvSpec               = "KVINJECT_SPEC"
	EnvClientID           = "AZURE_CLIENT_ID"
	EnvTenantID           = "AZURE_TENANT_ID"
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// File name limits from the contract.
const (
	MaxFileNameLength = 50
	MaxFiles          = 50
)
