package cacheserver

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
)

// identityReader is one identity's Key Vault reader and its credential,
// which caches the Entra ID access token. It is replaced once it is TTL
// old, so that an access token is never reused for longer than the TTL.
type identityReader struct {
	reader  *keyvault.Reader
	created time.Time
	// token is the newest token a proven caller of this identity sent:
	// the credential signs in with it, so a sign-in never uses a token
	// older than the last request's.
	token atomic.Pointer[string]
}

// identities holds one reader per identity key.
type identities struct {
	o       *Options
	metrics *metrics
	max     int // readers kept at most; the oldest are closed first

	mu      sync.Mutex
	readers map[identityKey]*identityReader
}

func newIdentities(o *Options, m *metrics) *identities {
	return &identities{o: o, metrics: m, max: o.MaxEntries, readers: map[identityKey]*identityReader{}}
}

// reader returns the identity's reader, made afresh when there is none or
// it is TTL old, and makes token the one its next sign-in uses.
func (ids *identities) reader(id identityKey, token string, now time.Time) (*identityReader, error) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if r, ok := ids.readers[id]; ok && now.Before(r.created.Add(ids.o.TTL)) {
		r.token.Store(&token)
		return r, nil
	}
	ids.closeOldLocked(now)
	r := &identityReader{created: now}
	r.token.Store(&token)
	reader, err := keyvault.NewReader(keyvault.ReaderOptions{
		ClientID: id.ClientID, TenantID: id.TenantID,
		Assertion:     func(context.Context) (string, error) { return *r.token.Load(), nil },
		Cloud:         ids.o.Cloud,
		AuthorityHost: ids.o.AuthorityHost,
		Timeout:       ids.o.UpstreamTimeout,
		Now:           ids.o.Now,
		Proxy:         ids.o.Proxy,
		RootCAs:       ids.o.RootCAs,
		Retry:         ids.o.Retry,
		Upstream:      ids.metrics,
	})
	if err != nil {
		return nil, err
	}
	r.reader = reader
	ids.readers[id] = r
	return r, nil
}

// forget closes the identity's reader: Entra ID refused its sign-in.
func (ids *identities) forget(id identityKey) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if r, ok := ids.readers[id]; ok {
		r.reader.Close()
		delete(ids.readers, id)
	}
}

// closeOldLocked closes readers that are TTL old, and the oldest beyond
// the cap, before one more is made.
func (ids *identities) closeOldLocked(now time.Time) {
	var oldest identityKey
	var oldestAt time.Time
	for k, r := range ids.readers {
		if !now.Before(r.created.Add(ids.o.TTL)) {
			r.reader.Close()
			delete(ids.readers, k)
			continue
		}
		if oldestAt.IsZero() || r.created.Before(oldestAt) {
			oldest, oldestAt = k, r.created
		}
	}
	if len(ids.readers) >= ids.max && !oldestAt.IsZero() {
		ids.readers[oldest].reader.Close()
		delete(ids.readers, oldest)
	}
}

// closeAll closes every reader.
func (ids *identities) closeAll() {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	for k, r := range ids.readers {
		r.reader.Close()
		delete(ids.readers, k)
	}
}
