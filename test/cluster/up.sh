#!/usr/bin/env bash
# Brings up a real single-node Kubernetes on this machine, without Docker or a public registry:
#   oidcsite (service-account issuer website), registry (a private mirror on loopback: TLS, basic auth),
#   containerd (own socket/root/state), etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubelet (with kvinject-credential-provider for the mirror) and kube-proxy, all from binaries that
#   build-binaries.sh builds from the Go module proxy. Everything lives in one state dir
#   (STATE_DIR, default _out/cluster), binds to 127.0.0.1 or the node IP on free ports, and is
#   stopped by down.sh. Every start begins from a clean state (fresh PKI, etcd, containerd root).
#
#   test/cluster/up.sh            then: source _out/cluster/env   (or export KUBECONFIG=...)
#
# Environment knobs: STATE_DIR, NODE_IP, NODE_NAME, POD_CIDR (10.244.0.0/24), SERVICE_CIDR (10.96.0.0/24),
# KUBE_PROXY=0 (skip kube-proxy: no Service IPs inside pods), KUBELET_FEATURE_GATES (the kubelet's
# --feature-gates, e.g. KubeletServiceAccountTokenForCredentialProviders=false), KEEP_ON_FAILURE=1 (do not tear down when a
# step fails), fixed ports via APISERVER_PORT, OIDC_PORT, ETCD_PORT, ... (see pick_ports).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

T0=$SECONDS
NODE_NAME="${NODE_NAME:-kvinject-node}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR="${SERVICE_CIDR:-10.96.0.0/24}"
KUBE_PROXY="${KUBE_PROXY:-1}"
KUBECTL="$K8S_BIN/kubectl"
PAUSE_IMAGE="kvinject.local/pause:1.0"

# ---------------------------------------------------------------------------------------------------
# already up?
running=() stopped=()
for c in "${COMPONENTS[@]}"; do
  [[ "$c" == kube-proxy && "$KUBE_PROXY" != 1 ]] && continue
  if pid_of "$c" >/dev/null; then running+=("$c"); else stopped+=("$c"); fi
done
if ((${#running[@]})) && ((${#stopped[@]} == 0)); then
  log "cluster already up (state $STATE_DIR); nothing to do"
  echo "export KUBECONFIG=$STATE_DIR/kubeconfig   # or: source $STATE_DIR/env"
  exit 0
fi
if ((${#running[@]})); then
  log "cluster partially up (running: ${running[*]}; not running: ${stopped[*]}); tearing it down first"
  "$CLUSTER_DIR/down.sh"
elif compgen -G "$PID_DIR/*.pid" >/dev/null || grep -qF " $STATE_DIR/" /proc/self/mountinfo ||
  [[ -d "$(cgroup_dirs | head -1)" ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
  # components gone but leftovers (containers, mounts, cgroups, bridge) remain, e.g. after a kill -9
  log "cleaning up what a previous run left behind"
  "$CLUSTER_DIR/down.sh"
fi
# one cluster per machine: kube-proxy's and the kubelet's iptables chains are machine-wide
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
  case "$cmd" in
    */kubelet\ *) [[ "$cmd" == *"$STATE_DIR"* ]] || log "WARNING: another kubelet runs on this machine (pid ${p#/proc/}): iptables chains and routes may collide" ;;
  esac
done

# ---------------------------------------------------------------------------------------------------
# prerequisites
[[ $EUID -eq 0 ]] || die "must run as root (containerd, kubelet, mounts, cgroups)"
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
if [[ "$KUBE_PROXY" == 1 ]]; then command -v iptables >/dev/null || missing+=(iptables); fi
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [[ -x "$K8S_BIN/$b" ]] || die "$K8S_BIN/$b missing: run test/cluster/build-binaries.sh (or make cluster-binaries)"
done
[[ -x "$ETCD_BIN/etcd" ]] || die "$ETCD_BIN/etcd missing: run test/cluster/build-binaries.sh"
"$CLUSTER_DIR/build-binaries.sh" tools >/dev/null 2>&1 || "$CLUSTER_DIR/build-binaries.sh" tools

if [[ -z "${NODE_IP:-}" ]]; then
  NODE_IP="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)"
  [[ -n "$NODE_IP" ]] || NODE_IP="$(ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
[[ -n "$NODE_IP" && "$NODE_IP" != 127.* ]] || die "no non-loopback IPv4 address found; set NODE_IP (the apiserver dials the kubelet there)"

# ---------------------------------------------------------------------------------------------------
# clean state (down.sh left logs and maybe data behind; nothing of it may be in use now)
if grep -qF " $STATE_DIR/" /proc/self/mountinfo; then "$CLUSTER_DIR/down.sh"; fi
grep -qF " $STATE_DIR/" /proc/self/mountinfo && die "mounts under $STATE_DIR remain; see down.sh output"
find "$STATE_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
mkdir -p "$PID_DIR" "$LOG_DIR" "$PKI" "$STATE_DIR/oidc/site/.well-known" "$STATE_DIR/oidc/site/openid/v1" \
  "$STATE_DIR/containerd" "$STATE_DIR/cni/net.d" "$STATE_DIR/kubelet" "$STATE_DIR/images" "$STATE_DIR/pod-logs"
((${#CONTAINERD_SOCK} < 100)) || die "containerd socket path too long for a unix socket: $CONTAINERD_SOCK (use a shorter STATE_DIR)"

FAILED=1
on_exit() {
  if ((FAILED)); then
    log "bring-up FAILED; logs are in $LOG_DIR"
    if [[ "${KEEP_ON_FAILURE:-0}" == 1 ]]; then
      log "KEEP_ON_FAILURE=1: leaving the components running; stop them with test/cluster/down.sh"
    else
      "$CLUSTER_DIR/down.sh" >&2 || true
    fi
  fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------------
# free ports (from 20000-29999: below the ephemeral range, outside the NodePort range)
declare -A TAKEN=()
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 10000))
    [[ -z "${TAKEN[$p]:-}" ]] || continue
    if ! ss -Hltn "( sport = :$p )" | grep -q .; then TAKEN[$p]=1; echo "$p"; return; fi
  done
  die "no free port found"
}
pick_ports() {
  local v
  for v in APISERVER_PORT OIDC_PORT ETCD_PORT ETCD_PEER_PORT KCM_PORT SCHEDULER_PORT KUBELET_PORT \
    KUBELET_HEALTHZ_PORT PROXY_HEALTHZ_PORT PROXY_METRICS_PORT REGISTRY_PORT EMULATOR_PORT; do
    if [[ -z "${!v:-}" ]]; then printf -v "$v" %s "$(free_port)"; else TAKEN[${!v}]=1; fi
  done
}
pick_ports
APISERVER_URL="https://$NODE_IP:$APISERVER_PORT"
# The service-account issuer is a static HTTPS website, as in the reference setup (OpenShift with the
# issuer documents copied to an Azure Storage static website): the apiserver signs tokens with
# iss=ISSUER_URL and advertises jwks_uri on that site; after it is up, this script copies the apiserver's
# own discovery document and JWKS there. The node IP (not 127.0.0.1) makes the site reachable from pods too.
ISSUER_URL="https://$NODE_IP:$OIDC_PORT"
SVC_PREFIX="${SERVICE_CIDR%.*/*}"
KUBERNETES_SVC_IP="${SVC_PREFIX}.1"

# ---------------------------------------------------------------------------------------------------
# process helpers
start() { # start NAME CMD...: runs CMD in its own session, logs to logs/NAME.log, records the PID
  local name="$1"; shift
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
  log "started $name (pid $!)"
}
# wait_for NAME TIMEOUT WHAT CMD...: polls CMD until it succeeds; fails naming NAME with its log tail,
# immediately if NAME's process has died.
wait_for() {
  local name="$1" timeout="$2" what="$3" deadline; shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      log "$name exited while waiting for $what; last lines of $LOG_DIR/$name.log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      die "$name died"
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $name: $what; last lines of $LOG_DIR/$name.log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      die "$name: $what not reached in ${timeout}s"
    fi
    sleep 0.25
  done
  log "$name: $what ($((SECONDS - T0))s)"
}
kc() { "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" "$@"; }

# ---------------------------------------------------------------------------------------------------
# PKI (openssl). One cluster CA for serving and client certificates; a separate CA for the issuer site.
SSL_LOG="$LOG_DIR/openssl.log"
new_ca() { # new_ca NAME CN
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    >>"$SSL_LOG" 2>&1
}
new_cert() { # new_cert CA NAME SUBJECT server|client|both [SANS]
  local ca="$1" name="$2" subj="$3" kind="$4" sans="${5:-}" eku ext
  case "$kind" in server) eku=serverAuth ;; client) eku=clientAuth ;; both) eku=serverAuth,clientAuth ;; esac
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z "$sans" ]] || echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$name.key" \
    -out "$PKI/$name.csr" -subj "$subj" >>"$SSL_LOG" 2>&1
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 -extfile "$ext" -out "$PKI/$name.crt" >>"$SSL_LOG" 2>&1
  rm -f "$PKI/$name.csr" "$ext"
}
new_ca ca "kvinject-local-cluster-ca"
new_cert ca apiserver "/CN=kube-apiserver" server \
  "IP:$NODE_IP,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
new_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
new_cert ca admin "/O=system:masters/CN=kubernetes-admin" client
new_cert ca controller-manager "/CN=system:kube-controller-manager" client
new_cert ca scheduler "/CN=system:kube-scheduler" client
new_cert ca kube-proxy "/CN=system:kube-proxy" client
new_cert ca kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" client
new_cert ca kubelet-serving "/CN=$NODE_NAME" server "IP:$NODE_IP,DNS:$NODE_NAME"
# front proxy (requestheader) CA, as kubeadm sets up: aggregated APIs work and components stop complaining
new_ca front-proxy-ca "kvinject-local-front-proxy-ca"
new_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" client
new_ca registry-ca "kvinject-local-registry-ca"
new_cert registry-ca registry "/CN=127.0.0.1" server "IP:127.0.0.1"
new_ca oidc-ca "kvinject-local-issuer-ca"
new_cert oidc-ca oidcsite "/CN=$NODE_IP" server "IP:$NODE_IP,IP:127.0.0.1,DNS:localhost"
cp "$PKI/oidc-ca.crt" "$STATE_DIR/oidc-ca.crt"
# service-account signing key: RSA, because Entra ID only accepts RS256
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" >>"$SSL_LOG" 2>&1
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" >>"$SSL_LOG" 2>&1
log "PKI ready ($((SECONDS - T0))s)"

b64() { base64 -w0 <"$1"; }
kubeconfig() { # kubeconfig FILE CERTNAME USER
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kvinject-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(b64 "$PKI/$2.crt")
    client-key-data: $(b64 "$PKI/$2.key")
contexts:
- name: kvinject-local
  context: {cluster: kvinject-local, user: $3, namespace: default}
current-context: kvinject-local
KC
  chmod 600 "$1"
}
kubeconfig "$STATE_DIR/kubeconfig" admin kubernetes-admin
kubeconfig "$STATE_DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
kubeconfig "$STATE_DIR/scheduler.kubeconfig" scheduler system:kube-scheduler
kubeconfig "$STATE_DIR/kubelet.kubeconfig" kubelet-client "system:node:$NODE_NAME"
kubeconfig "$STATE_DIR/kube-proxy.kubeconfig" kube-proxy system:kube-proxy

# ---------------------------------------------------------------------------------------------------
# issuer website (empty until the apiserver is up)
start oidcsite "$TOOLS_BIN/oidcsite" -addr "$NODE_IP:$OIDC_PORT" -dir "$STATE_DIR/oidc/site" \
  -cert "$PKI/oidcsite.crt" -key "$PKI/oidcsite.key"

# ---------------------------------------------------------------------------------------------------
# mirror registry: a private registry on loopback with TLS and basic auth, as the reference setup pulls
# its app from one with a dockerconfigjson credential. containerd trusts its CA (certs.d below); the
# credential reaches the kubelet only through kvinject-credential-provider (kubelet section).
REGISTRY="127.0.0.1:$REGISTRY_PORT"
mkdir -p "$STATE_DIR/registry"
(umask 077 && printf 'kvinject:%s\n' "$(openssl rand -hex 16)" >"$STATE_DIR/registry/auth")
start registry "$TOOLS_BIN/registry" serve -addr "$REGISTRY" -cert "$PKI/registry.crt" -key "$PKI/registry.key" \
  -auth-file "$STATE_DIR/registry/auth"
mkdir -p "$STATE_DIR/containerd/certs.d/$REGISTRY"
cat >"$STATE_DIR/containerd/certs.d/$REGISTRY/hosts.toml" <<HOSTS
server = "https://$REGISTRY"
[host."https://$REGISTRY"]
  capabilities = ["pull", "resolve"]
  ca = "$PKI/registry-ca.crt"
HOSTS

# ---------------------------------------------------------------------------------------------------
# containerd: own config, root, state and socket; CNI: bridge + host-local
cat >"$STATE_DIR/cni/net.d/10-kvinject.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "kvinject-$STATE_HASH",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE_DIR/cni/ipam"
      }
    }
  ]
}
CNI
# ipMasq is off: pods reach the node IP (apiserver, issuer site, test servers on the host) through the
# bridge gateway without NAT, and nothing else is reachable from this machine anyway; no CNI iptables rules
# means nothing to clean when containers are killed without a CNI DEL.
cat >"$STATE_DIR/containerd/config.toml" <<TOML
version = 2
root = "$STATE_DIR/containerd/root"
state = "$STATE_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # required on this kind of VM: root lacks CAP_SYS_RESOURCE, so runc must not lower oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # network namespaces under our state dir (not /var/run/netns), so down.sh finds and unmounts them
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE_DIR/containerd/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
    max_conf_num = 1
TOML
start containerd containerd --config "$STATE_DIR/containerd/config.toml"

# etcd (plain HTTP on loopback; test cluster only)
start etcd "$ETCD_BIN/etcd" --name default --data-dir "$STATE_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn

wait_for containerd 30 "API answering" "${CTR_CMD[@]}" version
# the sandbox image: any static program that sleeps, reaps children and exits on SIGTERM
"$TOOLS_BIN/mkimage" -o "$STATE_DIR/images/pause.tar" -tag "$PAUSE_IMAGE" -binary "$TOOLS_BIN/pause" \
  -user 65535:65535 >/dev/null
"$CLUSTER_DIR/load-image.sh" "$STATE_DIR/images/pause.tar" >/dev/null
log "pause image $PAUSE_IMAGE imported ($((SECONDS - T0))s)"

wait_for etcd 30 "healthy" sh -c "curl -fsS http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

# ---------------------------------------------------------------------------------------------------
# kube-apiserver
start_apiserver() {
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer="$ISSUER_URL" --service-account-jwks-uri="$ISSUER_URL/openid/v1/jwks" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --anonymous-auth=true \
  --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true --profiling=false --v=1
}
# ready_or_dead NAME TIMEOUT CMD...: polls CMD; returns 1 as soon as NAME's process is gone.
ready_or_dead() {
  local name="$1" deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    pid_of "$name" >/dev/null || return 1
    ((SECONDS < deadline)) || return 0 # wait_for reports the timeout
    sleep 0.25
  done
}
start_apiserver
# On a machine whose packages were installed seconds before, the first kube-apiserver has been seen to
# receive a shutdown within its first second ("APF bootstrap ensurer timed out"); a second start is clean.
if ! ready_or_dead kube-apiserver 90 curl -fsS --cacert "$PKI/ca.crt" "$APISERVER_URL/readyz"; then
  log "kube-apiserver exited during start-up; last lines of $LOG_DIR/kube-apiserver.log:"
  tail -n 5 "$LOG_DIR/kube-apiserver.log" >&2 || true
  cp "$LOG_DIR/kube-apiserver.log" "$LOG_DIR/kube-apiserver.first.log"
  log "starting kube-apiserver again"
  start_apiserver
fi
wait_for kube-apiserver 90 "ready" curl -fsS --cacert "$PKI/ca.crt" "$APISERVER_URL/readyz"

# anonymous read of the apiserver's own issuer discovery (as on a cluster whose issuer is public)
kc create clusterrolebinding oidc-discovery-anonymous --clusterrole=system:service-account-issuer-discovery \
  --group=system:unauthenticated >/dev/null
# publish the discovery document and JWKS to the issuer website
kc get --raw /.well-known/openid-configuration >"$STATE_DIR/oidc/site/.well-known/openid-configuration"
kc get --raw /openid/v1/jwks >"$STATE_DIR/oidc/site/openid/v1/jwks"
grep -qF "\"issuer\":\"$ISSUER_URL\"" "$STATE_DIR/oidc/site/.well-known/openid-configuration" ||
  die "apiserver discovery document does not name issuer $ISSUER_URL: $(cat "$STATE_DIR/oidc/site/.well-known/openid-configuration")"
wait_for oidcsite 20 "serving the issuer discovery document" \
  curl -fsS --cacert "$STATE_DIR/oidc-ca.crt" "$ISSUER_URL/.well-known/openid-configuration"
wait_for registry 20 "asking for credentials" \
  sh -c "curl -sS -o /dev/null -w '%{http_code}' --cacert '$PKI/registry-ca.crt' 'https://$REGISTRY/v2/' | grep -qx 401"

# ---------------------------------------------------------------------------------------------------
# controllers and scheduler
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false --profiling=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false --profiling=false --v=1

# ---------------------------------------------------------------------------------------------------
# kubelet, in its own cgroup root so that down.sh can find (and kill) every pod process
for d in $(cgroup_dirs); do
  mkdir -p "$d"
  if [[ -f "$(dirname "$d")/cpuset.cpus" ]]; then # cgroup v1 cpuset: a new group starts empty
    cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
    cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
  fi
done
cat >"$STATE_DIR/kubelet-config.yaml" <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podLogsDir: $STATE_DIR/pod-logs
volumePluginDir: $STATE_DIR/kubelet/volume-plugins
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# imported images cannot be pulled again: never garbage-collect them, never evict for a full disk
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
rotateCertificates: false
serverTLSBootstrap: false
KCFG
# the image credential provider for the mirror registry: the kubelet hands it the pod's ServiceAccount
# token, it signs in to Entra ID (the emulator, whose proxy port is reserved above and whose CA the
# e2e harness keeps in STATE_DIR/emulator/ca) and reads the registry credential from Key Vault.
CP_DIR="$STATE_DIR/credential-provider"
mkdir -p "$CP_DIR/bin"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$CP_DIR/bin/" ./cmd/kvinject-credential-provider &&
  go run ./cmd/kvinject credential-provider-config --match-images "$REGISTRY" \
    --https-proxy "http://$NODE_IP:$EMULATOR_PORT" --ca-file "$STATE_DIR/emulator/ca/ca.crt" >"$CP_DIR/config.yaml") \
  >>"$LOG_DIR/credential-provider-build.log" 2>&1 || die "building kvinject-credential-provider failed: see $LOG_DIR/credential-provider-build.log"
KUBELET_CMD=("$K8S_BIN/kubelet" --config="$STATE_DIR/kubelet-config.yaml"
  --kubeconfig="$STATE_DIR/kubelet.kubeconfig" --root-dir="$STATE_DIR/kubelet" --cert-dir="$STATE_DIR/kubelet/pki"
  --image-credential-provider-config="$CP_DIR/config.yaml" --image-credential-provider-bin-dir="$CP_DIR/bin"
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1)
[[ -n "${KUBELET_FEATURE_GATES:-}" ]] && KUBELET_CMD+=(--feature-gates="$KUBELET_FEATURE_GATES")
# restart-kubelet.sh starts it again from this, with other credential provider settings
printf '%s\n' "${KUBELET_CMD[@]}" >"$STATE_DIR/kubelet.cmd"
start kubelet "${KUBELET_CMD[@]}"

# kube-proxy (iptables mode): makes Service IPs work inside pods, e.g. the in-cluster config's
# KUBERNETES_SERVICE_HOST. Its iptables chains are machine-wide (one cluster per machine).
if [[ "$KUBE_PROXY" == 1 ]]; then
  if [[ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables # pod -> service -> pod on the same bridge
  fi
  cat >"$STATE_DIR/kube-proxy-config.yaml" <<KPC
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
KPC
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE_DIR/kube-proxy-config.yaml" --v=1
fi

wait_for kube-controller-manager 60 "healthy" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 "healthy" curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
wait_for kubelet 60 "healthy" curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
wait_for kubelet 90 "node $NODE_NAME Ready" \
  sh -c "'$KUBECTL' --kubeconfig '$STATE_DIR/kubeconfig' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
if [[ "$KUBE_PROXY" == 1 ]]; then
  wait_for kube-proxy 60 "healthy" curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
fi
wait_for kube-controller-manager 60 "default ServiceAccount and kube-root-ca.crt in namespace default" \
  sh -c "'$KUBECTL' --kubeconfig '$STATE_DIR/kubeconfig' -n default get serviceaccount default && '$KUBECTL' --kubeconfig '$STATE_DIR/kubeconfig' -n default get configmap kube-root-ca.crt"

# ---------------------------------------------------------------------------------------------------
cat >"$STATE_DIR/env" <<ENV
# Written by test/cluster/up.sh; source it.
export STATE_DIR='$STATE_DIR'
export KUBECONFIG='$STATE_DIR/kubeconfig'
export KUBECTL='$KUBECTL'
export APISERVER_URL='$APISERVER_URL'
export CLUSTER_CA_FILE='$PKI/ca.crt'
export ISSUER_URL='$ISSUER_URL'
export ISSUER_CA_FILE='$STATE_DIR/oidc-ca.crt'
export ISSUER_SITE_DIR='$STATE_DIR/oidc/site'
export NODE_IP='$NODE_IP'
export NODE_NAME='$NODE_NAME'
export POD_CIDR='$POD_CIDR'
export SERVICE_CIDR='$SERVICE_CIDR'
export CONTAINERD_SOCK='$CONTAINERD_SOCK'
export CTR='ctr --address $CONTAINERD_SOCK --namespace k8s.io'
export PAUSE_IMAGE='$PAUSE_IMAGE'
export APISERVER_PORT=$APISERVER_PORT OIDC_PORT=$OIDC_PORT ETCD_PORT=$ETCD_PORT KUBELET_PORT=$KUBELET_PORT
export REGISTRY='$REGISTRY'
export REGISTRY_CA_FILE='$PKI/registry-ca.crt'
export REGISTRY_AUTH_FILE='$STATE_DIR/registry/auth'
export EMULATOR_PORT=$EMULATOR_PORT
case ":\$PATH:" in *":$K8S_BIN:"*) ;; *) export PATH="$K8S_BIN:\$PATH" ;; esac
ENV
FAILED=0
log "cluster up in $((SECONDS - T0))s: node $NODE_NAME ($NODE_IP), apiserver $APISERVER_URL, issuer $ISSUER_URL"
echo "export KUBECONFIG=$STATE_DIR/kubeconfig   # or: source $STATE_DIR/env"
