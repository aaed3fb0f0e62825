// Package manifests holds kvinject's Kubernetes manifests as kustomize directories and renders
// them in-process (sigs.k8s.io/kustomize/api/krusty), so tests and `make manifests` need no
// kustomize or kubectl binary.
//
//	base/                     namespace kvinject-system, RBAC, Deployment, Service, PDB, webhook configuration
//	overlays/self-signed/     the default: the webhook makes and rotates its own certificate
//	overlays/cert-manager/    serving certificate from cert-manager
//	overlays/openshift/       serving certificate from OpenShift's service CA
//	default/                  = overlays/self-signed
//	examples/                 workloads using injection (namespace group1)
//
// The image is `kvinject` with the tag set in base/kustomization.yaml (`images:`); the
// webhook's --agent-image follows it. See docs/install.md.
package manifests
