# Shared by up.sh, down.sh and load-image.sh (sourced, not run). Paths, names and small helpers.
# shellcheck shell=bash

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
K8S_BIN="$ROOT/bin/k8s/$K8S_VERSION"
ETCD_BIN="$ROOT/bin/k8s/etcd-$ETCD_VERSION"
TOOLS_BIN="$ROOT/bin/cluster-tools"

STATE_DIR="${STATE_DIR:-$ROOT/_out/cluster}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/logs"
PKI="$STATE_DIR/pki"
CONTAINERD_SOCK="$STATE_DIR/containerd/containerd.sock"
CTR_CMD=(ctr --address "$CONTAINERD_SOCK" --namespace k8s.io)

# Names that must not collide with another cluster made from another state dir on the same machine.
STATE_HASH="$(printf %s "$STATE_DIR" | md5sum | cut -c1-8)"
CGROUP_ROOT="/kvinject-$STATE_HASH"   # kubelet cgroupRoot: every pod's processes live below it
BRIDGE="kvi$STATE_HASH"               # CNI bridge (<= 15 characters)

# Start order; down.sh stops them in reverse (with the containers in between, see there).
COMPONENTS=(oidcsite registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_of NAME: the recorded PID of a component if that process is still alive and still ours
# (its command line mentions the state dir, so a recycled PID is never mistaken for it).
pid_of() {
  local f="$PID_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$STATE_DIR" || return 1
  echo "$pid"
}

# stop_pid NAME PID [TIMEOUT]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" timeout="${3:-15}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 10; i++)); do
    [[ -d "/proc/$pid" ]] || { log "stopped $name (pid $pid)"; return 0; }
    # a zombie whose parent is gone is reaped by init soon; treat it as stopped
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) did not stop in ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# The cgroup v1 hierarchies (or the single v2 one) in which CGROUP_ROOT lives.
cgroup_dirs() {
  local d
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo "/sys/fs/cgroup$CGROUP_ROOT"; return; fi
  for d in /sys/fs/cgroup/*/; do
    d="${d%/}"
    [[ -f "$d/cgroup.procs" && "$(basename "$d")" != unified ]] || continue
    echo "$d$CGROUP_ROOT"
  done
}
