// Package e2e holds kvinject's end-to-end tests (build tag e2e): `make e2e`
// brings up the local cluster of test/cluster, the Entra ID and Key Vault
// emulator and kvinject itself, then runs annotated workloads the way a user
// does and asserts what the user would see.
package e2e
