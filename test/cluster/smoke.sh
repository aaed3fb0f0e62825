#!/usr/bin/env bash
# Smoke test of a running local cluster (up.sh): builds the tokencheck image with mkimage, imports it,
# runs it as a Deployment with a projected token for audience api://AzureADTokenExchange, and checks that
#   - the pod reaches Running (time from apply is printed),
#   - the token's iss is ISSUER_URL, its sub the pod's ServiceAccount, its aud the Azure audience,
#   - from inside the pod: the issuer site (node IP) and the kubernetes Service IP (kube-proxy) answer,
#   - from the host: ISSUER_URL/.well-known/openid-configuration and its jwks_uri answer with the
#     oidc CA, and the JWKS holds the token's kid,
#   - kubectl logs works (apiserver -> kubelet).
# KEEP=1 leaves the namespace in place.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ -f "$STATE_DIR/env" ]] || die "no $STATE_DIR/env: run test/cluster/up.sh first"
source "$STATE_DIR/env"
NS=kvinject-smoke
IMAGE=kvinject.local/tokencheck:dev
k() { "$KUBECTL" "$@"; }

"$CLUSTER_DIR/build-binaries.sh" tools >/dev/null
cat "$ISSUER_CA_FILE" "$CLUSTER_CA_FILE" >"$STATE_DIR/images/smoke-ca.pem"
"$TOOLS_BIN/mkimage" -o "$STATE_DIR/images/tokencheck.tar" -tag "$IMAGE" -binary "$TOOLS_BIN/tokencheck" \
  -ca-bundle "$STATE_DIR/images/smoke-ca.pem" >/dev/null
"$CLUSTER_DIR/load-image.sh" "$STATE_DIR/images/tokencheck.tar" >/dev/null

k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null
t0=$(date +%s.%N)
k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: tokencheck, namespace: $NS}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tokencheck, namespace: $NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: tokencheck}}
  template:
    metadata: {labels: {app: tokencheck}}
    spec:
      serviceAccountName: tokencheck
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: tokencheck
        image: $IMAGE
        imagePullPolicy: IfNotPresent
        env:
        - name: CHECK_URLS
          value: "$ISSUER_URL/.well-known/openid-configuration,$ISSUER_URL/openid/v1/jwks,https://\$(KUBERNETES_SERVICE_HOST):\$(KUBERNETES_SERVICE_PORT)/readyz"
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
        volumeMounts:
        - {name: token, mountPath: /var/run/secrets/tokens, readOnly: true}
      volumes:
      - name: token
        projected:
          sources:
          - serviceAccountToken: {path: token, audience: api://AzureADTokenExchange, expirationSeconds: 3600}
YAML
k -n "$NS" rollout status deployment/tokencheck --timeout=120s >/dev/null || {
  k -n "$NS" get pods -o wide; k -n "$NS" describe pods | tail -30; die "tokencheck did not become ready"; }
t1=$(date +%s.%N)
pod="$(k -n "$NS" get pods -l app=tokencheck -o jsonpath='{.items[0].metadata.name}')"
log "pod $pod Running $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s after apply"

logs=""
for _ in $(seq 1 40); do
  logs="$(k -n "$NS" logs "$pod" 2>/dev/null || true)"
  [[ "$(grep -c '^GET ' <<<"$logs")" -ge 3 ]] && break
  sleep 0.25
done
echo "$logs"
fail=0
check() { if eval "$2"; then log "ok   $1"; else log "FAIL $1"; fail=1; fi; }
claims="$(sed -n 's/^CLAIMS //p' <<<"$logs")"
check "token iss is $ISSUER_URL" "grep -qF '\"iss\":\"$ISSUER_URL\"' <<<'$claims'"
check "token sub is system:serviceaccount:$NS:tokencheck" "grep -qF '\"sub\":\"system:serviceaccount:$NS:tokencheck\"' <<<'$claims'"
check "token aud is api://AzureADTokenExchange" "grep -qF '\"aud\":[\"api://AzureADTokenExchange\"]' <<<'$claims'"
check "pod reaches the issuer discovery document" "grep -q '^GET $ISSUER_URL/.well-known/openid-configuration -> 200' <<<'$logs'"
check "pod reaches the issuer JWKS" "grep -q '^GET $ISSUER_URL/openid/v1/jwks -> 200' <<<'$logs'"
check "pod reaches the apiserver through the kubernetes Service IP" "grep -Eq '^GET https://[0-9.]+:443/readyz -> 200' <<<'$logs'"

disc="$(curl -fsS --cacert "$ISSUER_CA_FILE" "$ISSUER_URL/.well-known/openid-configuration")"
jwks_uri="$(sed -n 's/.*"jwks_uri":"\([^"]*\)".*/\1/p' <<<"$disc")"
check "host: discovery issuer is $ISSUER_URL" "grep -qF '\"issuer\":\"$ISSUER_URL\"' <<<'$disc'"
check "host: jwks_uri ($jwks_uri) is on the issuer site" "[[ '$jwks_uri' == '$ISSUER_URL/openid/v1/jwks' ]]"
jwks="$(curl -fsS --cacert "$ISSUER_CA_FILE" "$jwks_uri")"
kid="$(sed -n 's/.*"kid":"\([^"]*\)".*/\1/p' <<<"$claims")"
check "host: JWKS holds the token's kid $kid" "[[ -n '$kid' ]] && grep -qF '\"kid\":\"$kid\"' <<<'$jwks'"
check "anonymous: apiserver's own discovery document readable" \
  "curl -fsS --cacert '$CLUSTER_CA_FILE' '$APISERVER_URL/.well-known/openid-configuration' >/dev/null"

[[ "${KEEP:-0}" == 1 ]] || k delete namespace "$NS" --wait=false >/dev/null
((fail == 0)) || die "smoke test failed"
log "smoke test passed"
