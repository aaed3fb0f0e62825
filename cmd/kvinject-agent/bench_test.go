package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
)

// BenchmarkTimeToFiles runs the agent (a subprocess, as in the pod) against
// the emulator in proxy mode with every request and every new connection
// delayed by the latency, and reports per run: wall time from exec to exit
// (the files are in place at exit), HTTPS requests the emulator answered,
// TLS connections, the wall time in units of the latency ("round trips":
// includes process start and local work, so it is an upper bound), and
// the agent's peak RSS. Set KVINJECT_AGENT_BIN to a CGO_ENABLED=0 build of
// ./cmd/kvinject-agent to measure the real binary's RSS rather than this test
// binary's.
//
//	go test -run '^$' -bench TimeToFiles -benchtime 5x ./cmd/kvinject-agent/
func BenchmarkTimeToFiles(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		for _, lat := range []time.Duration{0, 50 * time.Millisecond} {
			b.Run(fmt.Sprintf("secrets=%d/latency=%v", n, lat), func(b *testing.B) {
				h := newHarness(b)
				var files [][2]string
				for i := range n {
					name := fmt.Sprintf("s%02d", i)
					if _, err := h.emu.SetSecret(vaultName, name, `{"v":"value-`+name+`"}`, ""); err != nil {
						b.Fatal(err)
					}
					files = append(files, [2]string{name, "secret:" + name + "#v"})
				}
				s := specOf(b, files...)
				h.emu.SetKnobs(azemu.Knobs{RequestLatency: lat, ConnLatency: lat})
				var reqs, conns, rss int64
				var total time.Duration
				b.ResetTimer()
				for range b.N {
					h.emu.ResetStats()
					r := h.run(s)
					if r.code != 0 {
						b.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
					}
					total += r.elapsed
					st := h.emu.Stats()
					for c, cs := range st.Classes {
						if c != azemu.ClassIssuerDiscovery && c != azemu.ClassIssuerJWKS {
							reqs += cs.Requests
						}
					}
					conns += st.Connections
					rss = max(rss, r.maxRSSKiB)
				}
				per := float64(b.N)
				b.ReportMetric(float64(total.Milliseconds())/per, "ms-to-files")
				b.ReportMetric(float64(reqs)/per, "https-req")
				b.ReportMetric(float64(conns)/per, "tls-conns")
				if lat > 0 {
					b.ReportMetric(float64(total)/per/float64(lat), "latencies")
				}
				b.ReportMetric(float64(rss)/1024, "peak-RSS-MiB")
			})
		}
	}
}
