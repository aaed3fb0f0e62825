//go:build tools

// Package etcd only pins the etcd server that test/cluster/build-binaries.sh builds.
package etcd

import _ "go.etcd.io/etcd/server/v3"
