// Package webhook turns an opted-in pod into one that fetches its Key Vault
// secrets at start: it parses the pod's kvinject.io annotations into a
// spec.Spec, adds the token and tmpfs volumes, the kvinject-agent init
// container and the read-only mounts, and serves that mutation as a
// controller-runtime admission webhook.
//
// The mutation (Mutate) is a pure function of the pod, its ServiceAccount's
// annotations and the webhook's Options; the admission handler does every
// lookup first and then calls it, and `kvinject inject` calls it offline.
// Warnings, pure too, gives the warnings the admission response carries to
// the pod's creator (kvinject.io/cache "true" where no cache runs).
package webhook
