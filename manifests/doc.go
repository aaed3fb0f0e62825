// Package manifests holds kvinject's Kubernetes manifests as kustomize directories and renders
// them in-process (sigs.k8s.io/kustomize/api/krusty), so tests and `make manifests` need no
// kustomize or kubectl binary.
//
//	base/                      namespace kvinject-system, RBAC, Deployment, Service, PDB, webhook configuration
//	overlays/self-signed/      the default: the webhook makes and rotates its own certificate
//	overlays/cert-manager/     serving certificate from cert-manager
//	overlays/openshift/        serving certificate from OpenShift's service CA
//	default/                   = overlays/self-signed
//	components/cache/          the cluster cache (kvinject cache, a kustomize Component): its
//	                           Deployment, PDB, Service, RBAC, NetworkPolicy, and the webhook's
//	                           --cache-url; not installable alone
//	with-cache/self-signed/    overlays/self-signed + components/cache; the webhook also issues
//	                           the cache's certificate and passes its CA (--cache-ca-file)
//	with-cache/cert-manager/   overlays/cert-manager + components/cache + the cache's Certificate
//	with-cache/openshift/      overlays/openshift + components/cache + the service CA for the cache
//	examples/                  workloads using injection (namespace group1)
//	pull-credentials/          RBAC for kvinject-credential-provider
//
// Installing is one `kubectl apply -k` of an overlay, or of a with-cache directory to run the
// cache too (a per-cluster choice; then pods opt in with kvinject.io/cache, or all of them with
// the webhook's --cache-by-default). Every certificate source writes the cache's certificate into
// the Secret kvinject-cache-cert, which the cache mounts read-only.
//
// The image is `kvinject` with the tag set in base/kustomization.yaml (`images:`); the
// webhook's --agent-image and the cache's image follow it. See docs/install.md.
package manifests
