// Package harness brings kvinject up on the local cluster of test/cluster:
// it builds and imports the images, runs the Entra ID and Key Vault emulator
// on the host as the agents' HTTPS_PROXY, deploys kvinject from manifests/
// with a local overlay, and gives tests and the demo a client and kubectl.
//
// Everything it starts is recorded under the cluster's state directory, so
// test/cluster/down.sh stops it with the cluster.
package harness
