package cacheserver

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// identityKey names one workload identity as one caller signs in with it:
// a value read with it goes to callers with the same key only.
type identityKey struct {
	TenantID, ClientID, Subject string
}

// namespace is the namespace of the key's ServiceAccount: the unit the
// store shares its room between.
func (k identityKey) namespace() string {
	rest, _ := strings.CutPrefix(k.Subject, serviceAccountPrefix)
	ns, _, _ := strings.Cut(rest, ":")
	return ns
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
	// created is when Key Vault created the version; zero when unknown.
	created time.Time
	readAt  time.Time
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

// store holds entries within MaxEntries and MaxBytes. Its room is shared
// fairly between namespaces: when it is full, the namespace holding the
// most (bytes, or entries when the entry cap is what is exceeded) loses
// its least recently used entry, so that a namespace holding less than
// the others never loses an entry to them.
type store struct {
	maxEntries int
	maxBytes   int64
	// onChange reports the entry and byte counts after every change (gauges).
	onChange func(entries int, bytes int64)

	mu      sync.Mutex
	byNS    map[string]*nsEntries
	byKey   map[entryKey]*list.Element
	bytes   int64
	entries int
}

// nsEntries are one namespace's entries, most recently used first.
type nsEntries struct {
	lru   *list.List // of *entry
	bytes int64
}

func newStore(maxEntries int, maxBytes int64, onChange func(int, int64)) *store {
	return &store{maxEntries: maxEntries, maxBytes: maxBytes, onChange: onChange,
		byNS: map[string]*nsEntries{}, byKey: map[entryKey]*list.Element{}}
}

// get returns a copy of the entry and marks it used.
func (s *store) get(k entryKey) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.byKey[k]
	if !ok {
		return entry{}, false
	}
	s.byNS[k.namespace()].lru.MoveToFront(el)
	return *el.Value.(*entry), true
}

// put stores e, replacing the entry of its key, and evicts until the caps
// hold, from the namespace holding the most. An entry larger than MaxBytes
// alone is not stored.
func (s *store) put(e entry) {
	e.computeSize()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(e.key)
	if e.size > s.maxBytes || s.maxEntries == 0 {
		s.changedLocked()
		return
	}
	ns := e.key.namespace()
	n := s.byNS[ns]
	if n == nil {
		n = &nsEntries{lru: list.New()}
		s.byNS[ns] = n
	}
	s.byKey[e.key] = n.lru.PushFront(&e)
	n.bytes += e.size
	s.bytes += e.size
	s.entries++
	for s.entries > s.maxEntries || s.bytes > s.maxBytes {
		s.removeLocked(s.largestLocked(s.bytes > s.maxBytes).lru.Back().Value.(*entry).key)
	}
	s.changedLocked()
}

// largestLocked is the namespace holding the most bytes (byBytes) or
// entries.
func (s *store) largestLocked(byBytes bool) *nsEntries {
	var most *nsEntries
	for _, n := range s.byNS {
		if most == nil || byBytes && n.bytes > most.bytes || !byBytes && n.lru.Len() > most.lru.Len() {
			most = n
		}
	}
	return most
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
	for k, el := range s.byKey {
		if now.After(staleEnd(*el.Value.(*entry))) {
			s.removeLocked(k)
		}
	}
	s.changedLocked()
}

func (s *store) removeLocked(k entryKey) {
	el, ok := s.byKey[k]
	if !ok {
		return
	}
	size := el.Value.(*entry).size
	ns := k.namespace()
	n := s.byNS[ns]
	n.lru.Remove(el)
	n.bytes -= size
	if n.lru.Len() == 0 {
		delete(s.byNS, ns)
	}
	s.bytes -= size
	s.entries--
	delete(s.byKey, k)
}

func (s *store) changedLocked() {
	if s.onChange != nil {
		s.onChange(s.entries, s.bytes)
	}
}
