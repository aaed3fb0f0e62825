package cacheserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of kvinject_cache_lookups_total.
const (
	resultHit   = "hit"   // a fresh value from memory
	resultMiss  = "miss"  // read from Key Vault
	resultStale = "stale" // past its TTL, served during an outage
	resultError = "error" // no value: refused, or an outage with nothing to serve
)

// metrics are the cache's Prometheus metrics. It is the Readers'
// keyvault.UpstreamCounter.
type metrics struct {
	lookups          *prometheus.CounterVec
	refusals         *prometheus.CounterVec
	upstreamRequests prometheus.Counter
	upstreamBytes    prometheus.Counter
	entries          prometheus.Gauge
	bytes            prometheus.Gauge
	answerBytes      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvinject_cache_lookups_total",
			Help: "Secrets asked for, by result: hit (fresh from memory), miss (read from Key Vault), stale (served past its TTL during an outage) or error (no value).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvinject_cache_refusals_total",
			Help: "Requests refused before any lookup, by reason (wrong-audience, pod-gone, rate-limited, too-large, ...).",
		}, []string{"reason"}),
		upstreamRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvinject_cache_upstream_requests_total",
			Help: "HTTPS requests to Entra ID and Key Vault, retries included.",
		}),
		upstreamBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvinject_cache_upstream_response_bytes_total",
			Help: "Response body bytes read from Entra ID and Key Vault.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvinject_cache_entries",
			Help: "Secret values held in memory.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvinject_cache_bytes",
			Help: "Approximate bytes of the values held, with their keys and bookkeeping.",
		}),
		answerBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvinject_cache_answer_bytes_in_flight",
			Help: "Bytes of the answers being encoded or written, reserved against --max-answer-bytes-in-flight.",
		}),
	}
	for _, r := range []string{resultHit, resultMiss, resultStale, resultError} {
		m.lookups.WithLabelValues(r) // export zeros, so rates work from the start
	}
	for _, r := range allReasons {
		m.refusals.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lookups, m.refusals, m.upstreamRequests, m.upstreamBytes, m.entries, m.bytes, m.answerBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register cache metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) UpstreamRequest()      { m.upstreamRequests.Inc() }
func (m *metrics) UpstreamBytes(n int64) { m.upstreamBytes.Add(float64(n)) }

func (m *metrics) storeChanged(entries int, bytes int64) {
	m.entries.Set(float64(entries))
	m.bytes.Set(float64(bytes))
}
