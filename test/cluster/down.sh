#!/usr/bin/env bash
# Stops the local cluster started by up.sh: exactly the recorded PIDs, the containers of its containerd
# (and the shims of that containerd), every process left in the kubelet's cgroup root, and all mounts
# under the state dir, so that a later up.sh starts clean. Logs stay in STATE_DIR/logs for debugging.
# Running it when nothing is up does nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

did=0
had_kubelet=0
[[ -f "$PID_DIR/kubelet.pid" ]] && had_kubelet=1

# 0. processes the tests or the demo started beside the cluster (the Azure emulator), recorded in
#    PID_DIR like the components
for f in "$PID_DIR"/extra-*.pid; do
  [[ -e "$f" ]] || continue
  c="$(basename "$f" .pid)"
  if pid="$(pid_of "$c")"; then stop_pid "$c" "$pid" 10; did=1; fi
  rm -f "$f"
done

# 1. kubelet and kube-proxy first, so nothing restarts containers or rewrites rules meanwhile
for c in kubelet kube-proxy; do
  if pid="$(pid_of "$c")"; then stop_pid "$c" "$pid" 15; did=1; fi
done
if [[ -f "$PID_DIR/kube-proxy.pid" && -x "$K8S_BIN/kube-proxy" ]]; then
  # remove kube-proxy's iptables rules (machine-wide chains; see README)
  timeout 30 "$K8S_BIN/kube-proxy" --cleanup >"$LOG_DIR/kube-proxy-cleanup.log" 2>&1 || log "kube-proxy --cleanup failed (see $LOG_DIR/kube-proxy-cleanup.log)"
fi

# the kubelet's own iptables chains (every kubelet makes them; machine-wide, see README)
if ((had_kubelet)); then
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for chain in INPUT OUTPUT; do
      while "$ipt" -w -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    "$ipt" -w -F KUBE-FIREWALL 2>/dev/null || true
    "$ipt" -w -X KUBE-FIREWALL 2>/dev/null || true
    for t in mangle nat filter; do "$ipt" -w -t "$t" -X KUBE-KUBELET-CANARY 2>/dev/null || true; done
    "$ipt" -w -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
  done
fi

# 2. containers: ask containerd to kill and delete its tasks
if pid_of containerd >/dev/null && [[ -S "$CONTAINERD_SOCK" ]]; then
  for ns in $(timeout 10 ctr --address "$CONTAINERD_SOCK" namespaces ls -q 2>/dev/null || true); do
    tasks="$(timeout 10 ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks ls -q 2>/dev/null || true)"
    for t in $tasks; do
      timeout 10 ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    for t in $tasks; do
      timeout 10 ctr --address "$CONTAINERD_SOCK" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true
    done
    [[ -z "$tasks" ]] || { log "killed $(wc -w <<<"$tasks") containerd task(s) in namespace $ns"; did=1; }
  done
fi

# 3. whatever still runs in the pods' cgroup root is a container process of this cluster
for i in $(seq 1 50); do
  procs=""
  for d in $(cgroup_dirs); do
    [[ -d "$d" ]] || continue
    procs+=" $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')"
  done
  procs="$(tr ' ' '\n' <<<"$procs" | grep -E '^[0-9]+$' | sort -u | tr '\n' ' ' || true)"
  [[ -n "${procs// /}" ]] || break
  ((i == 1)) && log "killing leftover pod processes: $procs"
  kill -KILL $procs 2>/dev/null || true
  did=1
  sleep 0.1
done

# 4. containerd, then any shim of this containerd (their command line names our socket exactly)
if pid="$(pid_of containerd)"; then stop_pid containerd "$pid" 15; did=1; fi
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
  case "$cmd" in
    *containerd-shim*"-address $CONTAINERD_SOCK "*) stop_pid "containerd-shim" "${p#/proc/}" 5; did=1 ;;
  esac
done

# 5. the control plane, the issuer site and the registry
for c in kube-scheduler kube-controller-manager kube-apiserver etcd oidcsite registry; do
  if pid="$(pid_of "$c")"; then stop_pid "$c" "$pid" 15; did=1; fi
done
rm -f "$PID_DIR"/*.pid 2>/dev/null || true
rm -f "$STATE_DIR/env" # sourcing it must fail while the cluster is down

# 6. mounts under the state dir (pod volumes, tmpfs, overlay rootfs, sandbox shm, netns), deepest first
mounts="$(awk -v p="$STATE_DIR/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)"
for m in $mounts; do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
  did=1
done
[[ -z "$mounts" ]] || log "unmounted $(wc -w <<<"$mounts") mount(s) under $STATE_DIR"

# 7. the pods' cgroups and the CNI bridge
for d in $(cgroup_dirs); do
  [[ -d "$d" ]] || continue
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cannot remove cgroup $d (busy?)"
  did=1
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" && did=1; fi
rm -rf "$STATE_DIR/cni/ipam"
# the kubelet's /var/log/containers symlinks (a fixed path) that point into our pod-logs
for l in /var/log/containers/*.log; do
  [[ -L "$l" && "$(readlink "$l")" == "$STATE_DIR/"* ]] && rm -f "$l"
done
# libcni's result cache is machine-wide (/var/lib/cni/results); remove only our network's entries
rm -f /var/lib/cni/results/"kvinject-$STATE_HASH"-* 2>/dev/null || true

if ((did)); then log "cluster down (state and logs kept in $STATE_DIR)"; else log "cluster not running; nothing to do"; fi
