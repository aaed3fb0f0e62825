package benchkit

import (
	"slices"
	"time"

	"github.com/kvinject/kvinject/internal/azemu"
)

// Traffic is what the emulator counted over one measurement: the traffic
// between the cluster and Azure, on the egress link.
type Traffic struct {
	Requests     int64                 // HTTPS requests to Entra ID and Key Vault
	Classes      map[azemu.Class]int64 // the requests by endpoint
	Conns        int64                 // TLS connections (handshakes) the emulator terminated
	WireUp       int64                 // to Azure, raw bytes on the connections (TLS records)
	WireDown     int64                 // from Azure
	BodyUp       int64                 // HTTP request bodies
	BodyDown     int64                 // HTTP response bodies
	TokensIssued int64                 // access tokens issued: token exchanges
}

// ReadTraffic reads the emulator's counters since its last ResetStats. It
// waits a moment first: the emulator records a request when its handler
// returns, which can trail the client's exit.
func ReadTraffic(emu *azemu.Emulator) Traffic {
	time.Sleep(30 * time.Millisecond)
	st := emu.Stats()
	t := Traffic{Classes: map[azemu.Class]int64{}, Conns: st.Connections,
		WireUp: st.ConnBytesIn, WireDown: st.ConnBytesOut, TokensIssued: st.TokensIssued}
	for c, cs := range st.Classes {
		if c == azemu.ClassIssuerDiscovery || c == azemu.ClassIssuerJWKS {
			continue // the emulator's own outbound fetches, not the link's
		}
		t.Requests += cs.Requests
		t.Classes[c] += cs.Requests
		t.BodyUp += cs.BytesIn
		t.BodyDown += cs.BytesOut
	}
	return t
}

// Median is the lower middle of v (0 for none): a value that was measured,
// not the mean of two.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// MedianTraffic takes the Median of every counter separately, so its
// fields need not come from the same measurement.
func MedianTraffic(ts []Traffic) Traffic {
	of := func(f func(Traffic) int64) int64 {
		v := make([]float64, len(ts))
		for i, t := range ts {
			v[i] = float64(f(t))
		}
		return int64(Median(v))
	}
	out := Traffic{
		Requests: of(func(t Traffic) int64 { return t.Requests }), Conns: of(func(t Traffic) int64 { return t.Conns }),
		WireUp: of(func(t Traffic) int64 { return t.WireUp }), WireDown: of(func(t Traffic) int64 { return t.WireDown }),
		BodyUp: of(func(t Traffic) int64 { return t.BodyUp }), BodyDown: of(func(t Traffic) int64 { return t.BodyDown }),
		TokensIssued: of(func(t Traffic) int64 { return t.TokensIssued }), Classes: map[azemu.Class]int64{},
	}
	for _, t := range ts {
		for k := range t.Classes {
			out.Classes[k] = of(func(t Traffic) int64 { return t.Classes[k] })
		}
	}
	return out
}
