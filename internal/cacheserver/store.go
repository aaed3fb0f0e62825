package cacheserver

import (
	"container/list"
	"sync"
	"time"
)

// identityKey names one workload identity as one caller signs in with it:
// a value read with it goes to callers with the same key only.
type identityKey struct {
	TenantID, ClientID, Subject string
}

// entryKey names one cached secret version of one identity.
type entryKey struct {
	identityKey
	Vault, Name, Version string
}

// entry is one cached value.
type entry struct {
	key                         entryKey
	value, version, contentType string
	readAt                      time.Time
	// expires is the end of the TTL: never later than the TTL of the
	// credential that read it, so that a value read with an access token
	// is not served as fresh after that token's reuse ends.
	expires time.Time
	size    int64
}

// entryOverhead approximates an entry's bookkeeping (map, list element,
// times), so that many tiny values still count against MaxBytes.
const entryOverhead = 256

func (e *entry) computeSize() {
	k := e.key
	e.size = int64(len(e.value)+len(e.version)+len(e.contentType)+len(k.TenantID)+len(k.ClientID)+
		len(k.Subject)+len(k.Vault)+len(k.Name)+len(k.Version)) + entryOverhead
}

// store holds entries within MaxEntries and MaxBytes, dropping the least
// recently used first.
type store struct {
	maxEntries int
	maxBytes   int64
	// onChange reports the entry and byte counts after every change (gauges).
	onChange func(entries int, bytes int64)

	mu    sync.Mutex
	lru   *list.List // of *entry, most recently used first
	byKey map[entryKey]*list.Element
	bytes int64
}

func newStore(maxEntries int, maxBytes int64, onChange func(int, int64)) *store {
	return &store{maxEntries: maxEntries, maxBytes: maxBytes, onChange: onChange,
		lru: list.New(), byKey: map[entryKey]*list.Element{}}
}

// get returns a copy of the entry and marks it used.
func (s *store) get(k entryKey) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.byKey[k]
	if !ok {
		return entry{}, false
	}
	s.lru.MoveToFront(el)
	return *el.Value.(*entry), true
}

// put stores e, replacing the entry of its key, and evicts the least
// recently used until the caps hold. An entry larger than MaxBytes alone
// is not stored.
func (s *store) put(e entry) {
	e.computeSize()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(e.key)
	if e.size > s.maxBytes || s.maxEntries == 0 {
		s.changedLocked()
		return
	}
	s.byKey[e.key] = s.lru.PushFront(&e)
	s.bytes += e.size
	for s.lru.Len() > s.maxEntries || s.bytes > s.maxBytes {
		s.removeLocked(s.lru.Back().Value.(*entry).key)
	}
	s.changedLocked()
}

// forget drops one entry.
func (s *store) forget(k entryKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(k)
	s.changedLocked()
}

// forgetIdentity drops every entry of one identity: Entra ID refused it.
func (s *store) forgetIdentity(id identityKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.byKey {
		if k.identityKey == id {
			s.removeLocked(k)
		}
	}
	s.changedLocked()
}

// dropExpired drops entries whose stale window ended before t, so that
// memory is not held by values that can never be served.
func (s *store) dropExpired(staleEnd func(entry) time.Time, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for el := s.lru.Back(); el != nil; {
		prev := el.Prev()
		if e := el.Value.(*entry); now.After(staleEnd(*e)) {
			s.removeLocked(e.key)
		}
		el = prev
	}
	s.changedLocked()
}

func (s *store) removeLocked(k entryKey) {
	el, ok := s.byKey[k]
	if !ok {
		return
	}
	s.bytes -= el.Value.(*entry).size
	s.lru.Remove(el)
	delete(s.byKey, k)
}

func (s *store) changedLocked() {
	if s.onChange != nil {
		s.onChange(s.lru.Len(), s.bytes)
	}
}
