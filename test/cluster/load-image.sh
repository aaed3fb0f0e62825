#!/usr/bin/env bash
# Imports an image tarball (docker-archive or OCI, e.g. from bin/cluster-tools/mkimage) into the local
# cluster's containerd, namespace k8s.io (where the kubelet looks), and optionally adds more tags to it.
#
#   test/cluster/load-image.sh TARBALL [EXTRA_TAG...]
#
# Pods must use the exact tag with imagePullPolicy: IfNotPresent (or Never); nothing can be pulled.
# Short names are normalised as usual: app:dev is docker.io/library/app:dev.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 && -f "$1" ]] || die "usage: $0 TARBALL [EXTRA_TAG...]"
tarball="$1"; shift
[[ -S "$CONTAINERD_SOCK" ]] || die "containerd socket $CONTAINERD_SOCK not found: is the cluster up (test/cluster/up.sh)?"

out="$("${CTR_CMD[@]}" images import "$tarball" 2>&1)" || die "ctr import of $tarball failed: $out"
# ctr prints "unpacking NAME (sha256:...)...done" per image
mapfile -t names < <(sed -n 's/^unpacking \([^ ]*\) (sha256:.*/\1/p' <<<"$out")
((${#names[@]})) || die "no image found in $tarball: $out"
for n in "${names[@]}"; do echo "$n"; done
for t in "$@"; do
  first="${t%%/*}"
  if [[ "$t" == */* && ("$first" == *.* || "$first" == *:* || "$first" == localhost) ]]; then
    full="$t" # has a registry host
  elif [[ "$t" == */* ]]; then
    full="docker.io/$t"
  else
    full="docker.io/library/$t"
  fi
  [[ "$full" == *:* || "$full" == *@* ]] || full="$full:latest"
  "${CTR_CMD[@]}" images tag --force "${names[0]}" "$full" >/dev/null
  echo "$full"
done
