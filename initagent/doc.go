// Package initagent is the kvinject init-container agent and its refresh
// sidecar: it reads the injection spec (KVINJECT_SPEC) and the AZURE_*
// workload identity variables, reads every referenced secret once (from the
// cluster cache first when the pod opts in, else from Key Vault through
// internal/keyvault), takes properties, certificate forms and templates out
// of the values (internal/secretform) and writes all files or none onto the
// pod's memory-backed emptyDir.
//
// The package never imports Kubernetes packages and never lets a secret value
// or a token reach a log line, an error or the exit output.
package initagent
