package benchkit

import (
	"fmt"
	"strings"

	"github.com/kvinject/kvinject/internal/azemu"
)

// The generated sections' units, shared so that the sections of one
// document write the same quantity the same way.

// Bytes writes a byte count as B, kB (1,000 B) or MB, with the precision a
// reader compares at: whole bytes below 10 kB.
func Bytes(n int64) string {
	if n >= 1_000_000 {
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	}
	if n >= 10_000 {
		return fmt.Sprintf("%.1f kB", float64(n)/1000)
	}
	return fmt.Sprintf("%d B", n)
}

// MiB writes kib, a /proc/PID/status amount, in MiB.
func MiB(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// MetOrMissed is a target's verdict.
func MetOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// RequestsByEndpoint lists the requests of each of the emulator's endpoint
// classes that has any, in the order a sign-in and a read make them ("1
// token, 10 KV GET"); "" for no request.
func RequestsByEndpoint(classes map[azemu.Class]int64) string {
	var parts []string
	for _, k := range []struct {
		c    azemu.Class
		name string
	}{
		{azemu.ClassInstanceDiscovery, "discovery"}, {azemu.ClassOIDCMetadata, "OpenID config"}, {azemu.ClassToken, "token"},
		{azemu.ClassKVChallenge, "KV challenge"}, {azemu.ClassKVGet, "KV GET"},
	} {
		if classes[k.c] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", classes[k.c], k.name))
		}
	}
	return strings.Join(parts, ", ")
}
