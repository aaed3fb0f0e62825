package cacheserver

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// callerLimits are token buckets by token subject.
type callerLimits struct {
	perSecond rate.Limit
	burst     int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

// maxIdleBucket is how long an unused bucket is kept: by then it is full
// again, so dropping it changes nothing.
func (l *callerLimits) maxIdleBucket() time.Duration {
	if l.perSecond <= 0 {
		return time.Hour
	}
	return time.Duration(float64(l.burst)/float64(l.perSecond)*float64(time.Second)) + time.Second
}

// allow takes one token of subject's bucket at now, or says how long until
// one is there.
func (l *callerLimits) allow(subject string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 1000 {
		for s, b := range l.buckets {
			if now.Sub(b.lastSeen) > l.maxIdleBucket() {
				delete(l.buckets, s)
			}
		}
	}
	b, ok := l.buckets[subject]
	if !ok {
		b = &bucket{limiter: rate.NewLimiter(l.perSecond, l.burst)}
		l.buckets[subject] = b
	}
	b.lastSeen = now
	r := b.limiter.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
