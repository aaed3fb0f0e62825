package azemu

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Class names the kind of endpoint a request hit; stats and faults are
// keyed by it.
type Class string

// Request classes.
const (
	ClassInstanceDiscovery Class = "instance-discovery"
	ClassOIDCMetadata      Class = "oidc-metadata"
	ClassToken             Class = "token"
	ClassKVChallenge       Class = "kv-challenge" // vault request without a bearer token
	ClassKVGet             Class = "kv-get"
	ClassKVList            Class = "kv-list"     // list secrets
	ClassKVVersions        Class = "kv-versions" // list versions of a secret
	ClassKVSet             Class = "kv-set"
	ClassOther             Class = "other" // anything unrouted (404s)
	// Outbound fetches the emulator makes to federated-credential issuers.
	ClassIssuerDiscovery Class = "issuer-discovery"
	ClassIssuerJWKS      Class = "issuer-jwks"
)

// FaultKind is a way to fail a request.
type FaultKind string

// Fault kinds.
const (
	FaultThrottle    FaultKind = "throttle"    // 429, Retry-After if Fault.RetryAfter > 0
	FaultUnavailable FaultKind = "unavailable" // 503
	FaultReset       FaultKind = "reset"       // TCP RST on the client connection
)

// Fault is one injected failure.
type Fault struct {
	Kind FaultKind `json:"kind"`
	// RetryAfter, when positive, is sent as Retry-After (whole seconds,
	// rounded up) on throttle and unavailable faults.
	RetryAfter time.Duration `json:"retryAfter,omitempty"`
}

// Knobs are the network and failure conditions, changeable at run time.
type Knobs struct {
	// RequestLatency is added to every request's response time.
	RequestLatency time.Duration
	// ConnLatency is added once per new client connection, before the TLS
	// handshake completes.
	ConnLatency time.Duration
	// BandwidthBPS limits each direction of every client connection to this
	// many bits per second (0: unlimited). The reference link is 200_000.
	BandwidthBPS int64
	// FaultRate is the probability (0..1) that a request in RateClasses
	// (all classes when empty) fails with one of RateFaults, chosen by the
	// seeded generator (Options.Seed), so runs are reproducible.
	FaultRate   float64
	RateFaults  []Fault
	RateClasses []Class
}

// ClassStats counts one class of requests. Bytes are HTTP body bytes;
// header and TLS overhead shows in Stats.ConnBytesIn/Out.
type ClassStats struct {
	Requests int64         `json:"requests"`
	BytesIn  int64         `json:"bytesIn"`
	BytesOut int64         `json:"bytesOut"`
	Status   map[int]int64 `json:"status,omitempty"`
}

// Stats is a snapshot of the emulator's counters.
type Stats struct {
	Classes map[Class]ClassStats `json:"classes"`
	// Connections counts client connections the emulator terminated TLS on.
	Connections int64 `json:"connections"`
	// ProxyConnects counts accepted CONNECT tunnels, ProxyRefused refused ones.
	ProxyConnects int64 `json:"proxyConnects"`
	ProxyRefused  int64 `json:"proxyRefused"`
	// ConnBytesIn/Out are raw bytes on client connections (TLS included).
	ConnBytesIn  int64 `json:"connBytesIn"`
	ConnBytesOut int64 `json:"connBytesOut"`
	// Faults counts injected faults by kind.
	Faults map[FaultKind]int64 `json:"faults,omitempty"`
	// TokensIssued counts successful token responses.
	TokensIssued int64 `json:"tokensIssued"`
	// SignIns counts them per client id and the assertion's subject, as
	// Entra ID's sign-in logs list a workload identity's federated
	// sign-ins: "CLIENT_ID SUBJECT".
	SignIns map[string]int64 `json:"signIns,omitempty"`
}

type stats struct {
	mu           sync.Mutex
	classes      map[Class]*ClassStats
	faults       map[FaultKind]int64
	signIns      map[string]int64
	connections  atomic.Int64
	connects     atomic.Int64
	refused      atomic.Int64
	connBytesIn  atomic.Int64
	connBytesOut atomic.Int64
	tokens       atomic.Int64
}

func newStats() *stats {
	return &stats{classes: map[Class]*ClassStats{}, faults: map[FaultKind]int64{}}
}

func (s *stats) record(c Class, status int, in, out int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.classes[c]
	if cs == nil {
		cs = &ClassStats{Status: map[int]int64{}}
		s.classes[c] = cs
	}
	cs.Requests++
	cs.BytesIn += in
	cs.BytesOut += out
	if status != 0 {
		cs.Status[status]++
	}
}

func (s *stats) fault(k FaultKind) {
	s.mu.Lock()
	s.faults[k]++
	s.mu.Unlock()
}

func (s *stats) snapshot() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{
		Classes:       make(map[Class]ClassStats, len(s.classes)),
		Faults:        maps.Clone(s.faults),
		Connections:   s.connections.Load(),
		ProxyConnects: s.connects.Load(),
		ProxyRefused:  s.refused.Load(),
		ConnBytesIn:   s.connBytesIn.Load(),
		ConnBytesOut:  s.connBytesOut.Load(),
		TokensIssued:  s.tokens.Load(),
		SignIns:       maps.Clone(s.signIns),
	}
	for k, v := range s.classes {
		c := *v
		c.Status = maps.Clone(v.Status)
		out.Classes[k] = c
	}
	return out
}

// signIn counts a token issued to clientID for an assertion of subject.
func (s *stats) signIn(clientID, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.signIns == nil {
		s.signIns = map[string]int64{}
	}
	s.signIns[clientID+" "+subject]++
}

func (s *stats) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.classes = map[Class]*ClassStats{}
	s.faults = map[FaultKind]int64{}
	s.signIns = nil
	s.connections.Store(0)
	s.connects.Store(0)
	s.refused.Store(0)
	s.connBytesIn.Store(0)
	s.connBytesOut.Store(0)
	s.tokens.Store(0)
}

// faultPlan is the scripted and random failure state.
type faultPlan struct {
	mu     sync.Mutex
	script map[Class][]Fault
}

// pickFault decides whether this request fails, consuming scripted faults
// first and then rolling the seeded dice.
func (e *Emulator) pickFault(c Class) (Fault, bool) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	if q := e.faults.script[c]; len(q) > 0 {
		f := q[0]
		e.faults.script[c] = q[1:]
		return f, true
	}
	k := e.knobs()
	if k.FaultRate <= 0 || len(k.RateFaults) == 0 {
		return Fault{}, false
	}
	if len(k.RateClasses) > 0 {
		found := false
		for _, rc := range k.RateClasses {
			if rc == c {
				found = true
				break
			}
		}
		if !found {
			return Fault{}, false
		}
	}
	// e.rng is only used under e.faults.mu.
	if e.rng.Float64() >= k.FaultRate {
		return Fault{}, false
	}
	return k.RateFaults[e.rng.IntN(len(k.RateFaults))], true
}

// FailNext makes the next n requests of class c fail with f (in addition
// to any already scripted).
func (e *Emulator) FailNext(c Class, n int, f Fault) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	for range n {
		e.faults.script[c] = append(e.faults.script[c], f)
	}
}

// ClearFaults drops scripted faults and sets FaultRate to 0.
func (e *Emulator) ClearFaults() {
	e.faults.mu.Lock()
	e.faults.script = map[Class][]Fault{}
	e.faults.mu.Unlock()
	e.knobMu.Lock()
	e.knob.FaultRate = 0
	e.knobMu.Unlock()
}

// SetKnobs replaces the network and fault knobs.
func (e *Emulator) SetKnobs(k Knobs) {
	k.RateFaults = append([]Fault(nil), k.RateFaults...)
	k.RateClasses = append([]Class(nil), k.RateClasses...)
	e.knobMu.Lock()
	e.knob = k
	e.knobMu.Unlock()
}

// Knobs returns the current knobs.
func (e *Emulator) Knobs() Knobs { return e.knobs() }

func (e *Emulator) knobs() Knobs {
	e.knobMu.RLock()
	defer e.knobMu.RUnlock()
	return e.knob
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats { return e.stats.snapshot() }

// ResetStats zeroes the counters.
func (e *Emulator) ResetStats() { e.stats.reset() }
