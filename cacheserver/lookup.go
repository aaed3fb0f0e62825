package cacheserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-logr/logr"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// Outcomes of one upstream read, as logged.
const (
	outcomeRead    = "read"
	outcomeStale   = "stale"
	outcomeOutage  = "outage"
	outcomeRefused = "refused"
	outcomeTooBig  = "too-large"
)

// fetched is what one upstream read gave the callers waiting on it.
type fetched struct {
	entry   entry
	err     *cacheapi.Error
	refusal bool // Key Vault or Entra ID refused: forget, never serve stale
}

// lookup answers one reference: a fresh entry, else one upstream read
// shared by every concurrent caller of the same key, else during an outage
// the last value within MaxStale.
func (s *Server) lookup(ctx context.Context, id identityKey, token string, ref cacheapi.SecretRef) cacheapi.Result {
	key := entryKey{identityKey: id, Vault: ref.Vault, Name: ref.Name, Version: ref.Version}
	now := s.o.Now()
	if e, ok := s.store.get(key); ok && now.Before(e.expires) {
		s.metrics.lookups.WithLabelValues(resultHit).Inc()
		s.log.V(1).Info("served", "subject", id.Subject, "vault", vaultHost(ref.Vault), "secret", ref.Name, "outcome", resultHit)
		return resultOf(ref, e, now, false)
	}
	v, _, _ := s.flights.Do(flightKey(key), func() (any, error) {
		return s.fetch(ctx, key, token), nil
	})
	f := v.(fetched)
	now = s.o.Now()
	if f.err == nil {
		s.metrics.lookups.WithLabelValues(resultMiss).Inc()
		return resultOf(ref, f.entry, now, false)
	}
	if !f.refusal {
		if e, ok := s.store.get(key); ok && !now.After(e.expires.Add(s.o.staleFor())) {
			s.metrics.lookups.WithLabelValues(resultStale).Inc()
			s.log.Info("served stale", "subject", id.Subject, "vault", vaultHost(ref.Vault), "secret", ref.Name,
				"outcome", outcomeStale, "ageSeconds", int64(now.Sub(e.readAt).Seconds()), "reason", f.err.Cause)
			return resultOf(ref, e, now, true)
		}
	}
	s.metrics.lookups.WithLabelValues(resultError).Inc()
	return cacheapi.Result{Ref: ref, Error: f.err}
}

// fetch reads one secret with the identity's reader and updates the store:
// a value is kept, a refusal forgets, an outage leaves the last value.
func (s *Server) fetch(ctx context.Context, key entryKey, token string) fetched {
	log := s.log.WithValues("subject", key.Subject, "vault", vaultHost(key.Vault), "secret", key.Name)
	now := s.o.Now()
	if s.o.staleFor() > 0 {
		s.store.dropExpired(func(e entry) time.Time { return e.expires.Add(s.o.staleFor()) }, now)
	}
	r, err := s.identities.reader(key.identityKey, token, now)
	if err != nil {
		// The request was validated: only a broken option gets here.
		log.Error(err, "no reader for the identity")
		return fetched{err: &cacheapi.Error{Cause: "the cache cannot sign in as this identity: " + err.Error()}}
	}
	// The read outlives a caller that hangs up: others may wait on it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.UpstreamTimeout)
	defer cancel()
	secret, err := r.reader.Read(ctx, spec.SecretID{Vault: key.Vault, Name: key.Name, Version: key.Version})
	if err != nil {
		return s.failed(log, key, err)
	}
	if len(secret.Value) > cacheapi.MaxValueBytes {
		s.store.forget(key)
		log.Info("upstream", "outcome", outcomeTooBig, "reason", fmt.Sprintf("value of %d bytes", len(secret.Value)))
		return fetched{refusal: true, err: &cacheapi.Error{Code: cacheapi.CodeValueTooLarge,
			Cause: fmt.Sprintf("the value is %d bytes, over the cache's limit of %d", len(secret.Value), cacheapi.MaxValueBytes),
			Fix:   fmt.Sprintf("read it without the cache (the pod annotation %s: %q)", spec.AnnotationCache, spec.CacheOff)}}
	}
	e := entry{key: key, value: secret.Value, version: secret.Version, contentType: secret.ContentType, created: secret.Created, readAt: now,
		expires: earliest(now.Add(s.o.TTL), r.created.Add(s.o.TTL))}
	s.store.put(e)
	log.Info("upstream", "outcome", outcomeRead, "version", secret.Version)
	return fetched{entry: e}
}

// failed sorts a failed read into an outage (serve the last value) or a
// refusal (forget it; and, when Entra ID refused the sign-in, forget every
// value of the identity).
func (s *Server) failed(log logr.Logger, key entryKey, err error) fetched {
	var re *keyvault.ReadError
	if !errors.As(err, &re) {
		return fetched{err: &cacheapi.Error{Cause: err.Error()}}
	}
	status, code := re.Upstream()
	apiErr := &cacheapi.Error{Status: status, Code: code, Cause: re.Problem.Cause, Fix: re.Problem.Fix}
	if isOutage(status) {
		log.Info("upstream", "outcome", outcomeOutage, "status", status, "code", code, "reason", re.Problem.Cause)
		return fetched{err: apiErr}
	}
	if re.SignInFailed() {
		s.store.forgetIdentity(key.identityKey)
		s.identities.forget(key.identityKey)
	} else {
		s.store.forget(key)
	}
	log.Info("upstream", "outcome", outcomeRefused, "status", status, "code", code, "reason", re.Problem.Cause)
	return fetched{refusal: true, err: apiErr}
}

// isOutage says whether an upstream status means the service could not
// answer (no answer, throttled, failed) rather than that it refused.
func isOutage(status int) bool {
	return status == 0 || status == http.StatusTooManyRequests || status >= 500
}

func resultOf(ref cacheapi.SecretRef, e entry, now time.Time, stale bool) cacheapi.Result {
	age := max(int64(now.Sub(e.readAt)/time.Second), 0)
	var created int64
	if !e.created.IsZero() {
		created = e.created.Unix()
	}
	return cacheapi.Result{Ref: ref, Value: e.value, Version: e.version, ContentType: e.contentType, Created: created, Stale: stale, AgeSeconds: age}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// flightKey joins an entry key with a separator no field can hold.
func flightKey(k entryKey) string {
	return k.TenantID + "\x00" + k.ClientID + "\x00" + k.Subject + "\x00" + k.Vault + "\x00" + k.Name + "\x00" + k.Version
}

func vaultHost(vault string) string {
	if u, err := url.Parse(vault); err == nil && u.Host != "" {
		return u.Host
	}
	return vault
}
