package cacheserver

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/kvinject/kvinject/internal/cacheapi"
)

// maxErrorResult bounds the JSON of a result that says the answer is too
// large: its reference (a validated vault URL, name and version, which
// JSON does not escape) and a fixed cause.
const maxErrorResult = 1 << 10

// answerBound is an upper bound of the JSON of results: every character of
// every string escaped to six bytes (\u00XX), plus the fixed fields, and
// at least maxErrorResult per result.
func answerBound(results []cacheapi.Result) int64 {
	n := int64(len(`{"secrets":[]}`) + 1)
	for _, r := range results {
		strs := len(r.Ref.Vault) + len(r.Ref.Name) + len(r.Ref.Version) + len(r.Value) + len(r.Version) + len(r.ContentType)
		if r.Error != nil {
			strs += len(r.Error.Code) + len(r.Error.Cause) + len(r.Error.Fix)
		}
		n += int64(max(6*strs+256, maxErrorResult)) + 1
	}
	return n
}

// encodeAnswer encodes results as a cacheapi.Response of at most limit
// bytes, without HTML escaping (a '<' stays one byte): a result that does
// not fit with room for the rest is replaced by CodeAnswerTooLarge. limit
// must leave maxErrorResult for each result.
func encodeAnswer(results []cacheapi.Result, limit int) []byte {
	var body, one bytes.Buffer
	enc := json.NewEncoder(&one)
	enc.SetEscapeHTML(false)
	encode := func(r cacheapi.Result) []byte {
		one.Reset()
		if err := enc.Encode(r); err != nil {
			// A Result of strings, bools and ints always encodes.
			panic(err)
		}
		return bytes.TrimSuffix(one.Bytes(), []byte("\n"))
	}
	body.WriteString(`{"secrets":[`)
	for i, r := range results {
		b := encode(r)
		rest := (len(results) - i - 1) * (maxErrorResult + 1)
		if body.Len()+len(b)+rest+len("]}\n") > limit {
			b = encode(cacheapi.Result{Ref: r.Ref, Error: &cacheapi.Error{Code: cacheapi.CodeAnswerTooLarge,
				Cause: "the answer's other values took the cache's limit of one answer",
				Fix:   "ask for fewer secrets per request; read this one from Key Vault directly"}})
		}
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(b)
	}
	body.WriteString("]}\n")
	return body.Bytes()
}

// namespaceSlots bound the requests of each namespace answered at once.
type namespaceSlots struct {
	max  int
	mu   sync.Mutex
	byNS map[string]*namespaceSlot
}

type namespaceSlot struct {
	held  chan struct{}
	users int // requests holding or waiting: the slot goes when none
}

// acquire waits up to wait for one of ns's slots; release gives it back.
func (l *namespaceSlots) acquire(ctx context.Context, ns string, wait time.Duration) (release func(), ok bool) {
	l.mu.Lock()
	s := l.byNS[ns]
	if s == nil {
		s = &namespaceSlot{held: make(chan struct{}, l.max)}
		l.byNS[ns] = s
	}
	s.users++
	l.mu.Unlock()
	leave := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if s.users--; s.users == 0 {
			delete(l.byNS, ns)
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.held <- struct{}{}:
		return func() { <-s.held; leave() }, true
	case <-t.C:
	case <-ctx.Done():
	}
	leave()
	return nil, false
}
