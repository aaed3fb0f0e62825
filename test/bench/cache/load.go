package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// fillResult is the cache replica filled with -fill secrets, then asked
// for them as agents ask.
type fillResult struct {
	idle, filled, afterHits procMem
	valueBytes              int64 // the cached values' bytes
	requests                int   // requests of the fill
	up                      upstream
	hits                    []hitResult
}

// hitResult is the cache's CPU per request over a stretch of hits.
type hitResult struct {
	mode     string
	proto    string
	requests int64
	cpu      time.Duration
	elapsed  time.Duration
}

func (h hitResult) cpuPerRequest() time.Duration {
	if h.requests == 0 {
		return 0
	}
	return h.cpu / time.Duration(h.requests)
}

// hitWorkers is how many requests are in flight at once during hits: one
// per CPU of the reference machine.
const hitWorkers = 2

// fillAndHit starts one replica with a rate limit out of the way (the
// production limit, 5 requests a second per ServiceAccount after a burst
// of 100, would throttle the loop, not the cache's work), fills it with
// -fill secrets read from Key Vault in requests of 50, reads its memory,
// then asks for them 10 at a time for -hit-time on a new TLS connection per
// request (as every agent, a new process, does), and again for -hit-time
// on kept-alive connections.
func (b *bench) fillAndHit() (r fillResult, err error) {
	c, err := b.startChild("-rate", "1000000", "-rate-burst", "1000000")
	if err != nil {
		return r, err
	}
	defer func() {
		if e := c.stop(); e != nil && err == nil {
			err = e
		}
	}()
	time.Sleep(time.Second) // past start-up's allocations
	if r.idle, err = c.mem(); err != nil {
		return r, err
	}
	raw, err := os.ReadFile(b.tokens[0])
	if err != nil {
		return r, err
	}
	token := strings.TrimSpace(string(raw))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(b.caPEM)) {
		return r, errors.New("the cache's certificate does not parse")
	}

	keep := newTransport(roots, true)
	defer keep.CloseIdleConnections()
	b.Emulator.ResetStats()
	for k := 0; k < b.c.fill; k += cacheapi.MaxSecretsPerRequest {
		idx := make([]int, 0, cacheapi.MaxSecretsPerRequest)
		for i := k; i < min(k+cacheapi.MaxSecretsPerRequest, b.c.fill); i++ {
			idx = append(idx, i)
			r.valueBytes += int64(len(b.values[i]))
		}
		if _, err := b.ask(keep, c.url, token, idx); err != nil {
			return r, fmt.Errorf("fill: %w", err)
		}
		r.requests++
	}
	r.up = benchkit.ReadTraffic(b.Emulator)
	time.Sleep(time.Second)
	if r.filled, err = c.mem(); err != nil {
		return r, err
	}

	for _, mode := range []struct {
		name string
		tr   *http.Transport
	}{
		{"a new TLS connection per request as every agent opens", newTransport(roots, false)},
		{"kept-alive connections", newTransport(roots, true)},
	} {
		h, err := b.hits(c, mode.tr, token)
		mode.tr.CloseIdleConnections()
		if err != nil {
			return r, fmt.Errorf("hits, %s: %w", mode.name, err)
		}
		h.mode = mode.name
		r.hits = append(r.hits, h)
	}
	if up := benchkit.ReadTraffic(b.Emulator); up.Requests != r.up.Requests {
		return r, fmt.Errorf("the hits went upstream: %d requests after the fill's %d", up.Requests, r.up.Requests)
	}
	r.afterHits, err = c.mem()
	return r, err
}

// hits asks c for 10 cached secrets at a time, hitWorkers requests in
// flight, for -hit-time, and measures c's CPU time over it.
func (b *bench) hits(c *child, tr *http.Transport, token string) (hitResult, error) {
	var h hitResult
	var next, done atomic.Int64
	var proto atomic.Value
	ctx, cancel := context.WithTimeout(context.Background(), b.c.hitTime)
	defer cancel()
	cpu0, err := c.cpu()
	if err != nil {
		return h, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, hitWorkers)
	for range hitWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := int(next.Add(1) - 1)
				idx := make([]int, b.c.secrets)
				for j := range idx {
					idx[j] = (n*b.c.secrets + j) % b.c.fill
				}
				p, err := b.ask(tr, c.url, token, idx)
				if err != nil {
					errs <- err
					return
				}
				proto.Store(p)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	h.elapsed = time.Since(start)
	cpu1, err := c.cpu()
	if err != nil {
		return h, err
	}
	select {
	case err := <-errs:
		return h, err
	default:
	}
	h.requests, h.cpu = done.Load(), cpu1-cpu0
	if p, ok := proto.Load().(string); ok {
		h.proto = p
	}
	return h, nil
}

func newTransport(roots *x509.CertPool, keepAlive bool) *http.Transport {
	return &http.Transport{
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		ForceAttemptHTTP2: true, // as the agent's cache client
		DisableKeepAlives: !keepAlive,
	}
}

// ask posts one request for the fill secrets idx, as the agent does, and
// checks every value; it returns the HTTP protocol of the answer.
func (b *bench) ask(tr *http.Transport, url, token string, idx []int) (string, error) {
	req := cacheapi.Request{ClientID: benchkit.ClientID, TenantID: benchkit.TenantID}
	for _, i := range idx {
		req.Secrets = append(req.Secrets, cacheapi.SecretRef{Vault: benchkit.VaultURL, Name: fillSecret(i)})
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	hr, err := http.NewRequest(http.MethodPost, url+cacheapi.Path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: tr, Timeout: b.c.podTimeout}).Do(hr)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the cache answered %s: %s", resp.Status, firstLine(string(data)))
	}
	var answer cacheapi.Response
	if err := json.Unmarshal(data, &answer); err != nil {
		return "", fmt.Errorf("the cache's answer: %w", err)
	}
	if len(answer.Secrets) != len(idx) {
		return "", fmt.Errorf("%d results for %d secrets", len(answer.Secrets), len(idx))
	}
	for k, res := range answer.Secrets {
		switch {
		case res.Error != nil:
			return "", fmt.Errorf("%s: %d %s: %s", fillSecret(idx[k]), res.Error.Status, res.Error.Code, res.Error.Cause)
		case res.Stale:
			return "", fmt.Errorf("%s: stale", fillSecret(idx[k]))
		case res.Value != b.values[idx[k]]:
			return "", fmt.Errorf("%s: not the vault's value", fillSecret(idx[k]))
		}
	}
	return resp.Proto, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
