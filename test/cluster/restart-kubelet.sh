#!/usr/bin/env bash
# Restarts the local cluster's kubelet, as up.sh started it or with other credential provider settings,
# for tests of kvinject-credential-provider's modes (pods keep running; the kubelet's credential cache,
# held in memory, starts empty):
#   test/cluster/restart-kubelet.sh [--credential-provider-config FILE] [--feature-gates GATES]
# e.g. node mode on a kubelet that sends no ServiceAccount token to credential providers:
#   test/cluster/restart-kubelet.sh --credential-provider-config node.yaml \
#     --feature-gates KubeletServiceAccountTokenForCredentialProviders=false
# Without flags, the kubelet of up.sh again. Waits until the node is Ready.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
T0=$SECONDS
config="" gates=""
while (($#)); do
  case "$1" in
    --credential-provider-config) config="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    --feature-gates) gates="$2"; shift 2 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[[ -f "$STATE_DIR/kubelet.cmd" ]] || die "no $STATE_DIR/kubelet.cmd: start the cluster with test/cluster/up.sh"
mapfile -t cmd <"$STATE_DIR/kubelet.cmd"
if [[ -n "$config" ]]; then
  [[ -f "$config" ]] || die "no file $config"
  for i in "${!cmd[@]}"; do
    [[ "${cmd[$i]}" == --image-credential-provider-config=* ]] && cmd[$i]="--image-credential-provider-config=$config"
  done
fi
if [[ -n "$gates" ]]; then
  for i in "${!cmd[@]}"; do
    [[ "${cmd[$i]}" == --feature-gates=* ]] && unset 'cmd[i]'
  done
  cmd+=(--feature-gates="$gates")
fi
if pid="$(pid_of kubelet)"; then stop_pid kubelet "$pid" 30; fi
setsid "${cmd[@]}" >>"$LOG_DIR/kubelet.log" 2>&1 </dev/null &
echo $! >"$PID_DIR/kubelet.pid"
log "started kubelet (pid $!)${config:+ with $config}${gates:+, --feature-gates=$gates}"
port="$(awk '/^healthzPort:/ {print $2}' "$STATE_DIR/kubelet-config.yaml")"
node="$(sed -n 's/^--hostname-override=//p' "$STATE_DIR/kubelet.cmd")"
for ((i = 0; i < 120; i++)); do
  pid_of kubelet >/dev/null || { tail -n 30 "$LOG_DIR/kubelet.log" >&2; die "the kubelet exited"; }
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 &&
    "$K8S_BIN/kubectl" --kubeconfig "$STATE_DIR/kubeconfig" get node "$node" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; then
    log "kubelet healthy and node $node Ready ($((SECONDS - T0))s)"
    exit 0
  fi
  sleep 0.5
done
tail -n 30 "$LOG_DIR/kubelet.log" >&2
die "the kubelet was not healthy and Ready in 60s"
