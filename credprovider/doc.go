// Package credprovider is kvinject's kubelet image credential provider: an
// exec plugin speaking credentialprovider.kubelet.k8s.io/v1 that the kubelet
// runs, on a pull, with the pod's ServiceAccount token (KEP-4412,
// tokenAttributes in the kubelet's CredentialProviderConfig). It exchanges
// the token with Entra ID for the identity the ServiceAccount names
// (azure.workload.identity/client-id), reads the Key Vault secret named by
// its kvinject.io/pull-secret annotation, and answers with the registry
// credential that secret holds for the image's registry.
//
// It owns the plugin's wire format (Request, Response: local structs, so the
// binary carries no Kubernetes package), the parsing of the credential (a
// dockerconfigjson, user:password or JSON {"username","password"}), the
// kubelet's image matching, and the choice of cache key and duration. The
// token exchange, the Key Vault read and their diagnostics are the agent's
// (keyvault.Reader).
//
// It never writes a token, an assertion, a password or any other secret
// value to a log, an error or stderr: its one error line names the image,
// the ServiceAccount, the vault, the secret and registry hosts only.
package credprovider
