// Package selfcert gives the kvinject webhook its own serving certificate, for clusters with
// neither cert-manager nor OpenShift's service CA (the self-signed overlay).
//
// Every replica runs the same loop; they agree through ONE Secret in their own namespace
// (Options.SecretName, type kubernetes.io/tls), which holds only the CA and serving certificates
// and keys: with the cluster cache's Secret below, the only Secrets kvinject ever writes. No
// leader election: a replica creates the Secret, or updates it with its resourceVersion; the
// loser of a race gets AlreadyExists or Conflict, re-reads, and uses what the winner wrote.
//
// Secret keys: ca.crt and ca.key (the current CA), ca-bundle.crt (the current CA first, then
// every earlier CA that has not expired), tls.crt and tls.key (the serving certificate, signed
// by the current CA, for the Service's DNS names).
//
// Each pass of the loop, in this order:
//  1. ensure the Secret: a CA is renewed at 2/3 of its lifetime (default 10 years), a serving
//     certificate at 2/3 of its lifetime (default 1 year) or when it is not signed by the current
//     CA or does not name the Service;
//  2. patch the caBundle of every webhook in the MutatingWebhookConfiguration
//     (Options.WebhookConfigName) with a strategic merge patch carrying the resourceVersion read
//     just before. The bundle is the Secret's ca-bundle.crt plus any CA already in the caBundle
//     that is newer than every CA the replica knows (so a replica with a stale view never removes
//     a CA a faster one added); expired CAs leave;
//  3. only then write ca.crt (FileCABundle: the Secret's ca-bundle.crt), tls.key and tls.crt into
//     the cert dir (atomic renames), where controller-runtime's certwatcher picks up the pair, and
//     the webhook's --cache-ca-file the bundle;
//  4. with Options.CacheSecretName, the cluster cache's Secret (type kubernetes.io/tls, same
//     agreement): tls.crt and tls.key, a certificate for the cache Service's DNS names
//     (Options.CacheServiceName) signed by a CA of the bundle, and ca.crt, the bundle. Never the
//     CA's key. Its certificate is renewed at 2/3 of its lifetime, or when its CA left the bundle
//     or its names changed, always by the current CA: after a CA rotation it moves to the new CA at
//     its own renewal, so pods given the bundle before the rotation keep trusting the cache.
//
// A Secret of either name that kvinject did not make (no label app.kubernetes.io/managed-by:
// kvinject) is never written.
//
// Because the caBundle holds a CA before any replica serves a certificate it signed, and an old
// CA stays until it expires (and serving certificates never outlive their CA), the API server can
// verify every replica's certificate at every moment of a rotation.
//
// Runnable.EnsureCertificate must succeed before the webhook server starts (it needs the
// files); it tries the cache's Secret once, and a failure there does not hold the webhook back.
// Runnable.Start then keeps everything current, woken by watches on the Secrets and the webhook
// configuration (each restricted to its name), by the certificates' renewal times and by a
// periodic resync. ReadyChecker reports ready once this replica serves a valid certificate whose
// CA is in the caBundle; the cache's certificate does not count.
package selfcert
