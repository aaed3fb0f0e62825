// Package esoconvert moves External Secrets Operator (ESO) setups on Azure Key
// Vault to kvinject: it reads ExternalSecrets, their (Cluster)SecretStores and
// the workloads that consume the synced Secrets, and says what to annotate,
// which federated credential to create, what cannot move (an image pull
// secret: the kubelet pulls before any init container runs; dataFrom.find;
// ESO templates) and which references are broken.
//
// It never contacts a cluster or a vault: the input files are all it knows.
package esoconvert
