package cacheserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/spec"
)

// Server is the cache's http.Handler for cacheapi.Path.
type Server struct {
	o          Options
	log        logr.Logger
	metrics    *metrics
	store      *store
	identities *identities
	limits     *callerLimits
	flights    singleflight.Group
	reviews    chan struct{} // a slot per TokenReview in flight
	namespaces *namespaceSlots
	requests   chan struct{} // a slot per request being handled
	// answers holds the bytes of the answers being written
	// (Options.MaxAnswerBytesInFlight).
	answers *semaphore.Weighted
}

// New validates o and returns the cache. It makes no request.
func New(o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("cache options: %w", err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		o:       o,
		log:     o.Logger,
		metrics: m,
		store:   newStore(o.MaxEntries, o.MaxBytes, m.storeChanged),
		limits:  &callerLimits{perSecond: rate.Limit(o.RatePerSecond), burst: o.RateBurst, buckets: map[string]*bucket{}},
	}
	s.identities = newIdentities(&s.o, m)
	s.reviews = make(chan struct{}, s.o.MaxConcurrentReviews)
	s.namespaces = &namespaceSlots{max: s.o.MaxRequestsPerNamespace, byNS: map[string]*namespaceSlot{}}
	s.answers = semaphore.NewWeighted(s.o.MaxAnswerBytesInFlight)
	s.requests = make(chan struct{}, s.o.MaxConcurrentRequests)
	return s, nil
}

// Close closes the upstream connections.
func (s *Server) Close() { s.identities.closeAll() }

// ServeHTTP answers one cacheapi.Request. A caller that is not a proven pod,
// asks too much or too often is refused with an HTTP status; everything
// else gets a Result per secret.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case s.requests <- struct{}{}:
		defer func() { <-s.requests }()
	default:
		w.Header().Set("Retry-After", "1")
		s.refuse(w, &refusal{http.StatusServiceUnavailable, reasonBusy,
			fmt.Sprintf("%d requests are being handled: retry", s.o.MaxConcurrentRequests)})
		return
	}
	c, req, ref := s.admit(w, r)
	if ref != nil {
		s.refuse(w, ref)
		return
	}
	release, ok := s.namespaces.acquire(r.Context(), c.Namespace, s.o.ReviewWait)
	if !ok {
		w.Header().Set("Retry-After", "1")
		s.refuse(w, &refusal{http.StatusServiceUnavailable, reasonNamespaceBusy,
			fmt.Sprintf("%d requests of namespace %s are being answered and none ended within %v: retry", s.o.MaxRequestsPerNamespace, c.Namespace, s.o.ReviewWait)})
		return
	}
	defer release()
	s.answer(w, r, c, s.lookupAll(r.Context(), c, req, bearerToken(r)))
}

// answer writes the results within the room the answers in flight have
// left: it reserves an upper bound of the answer's bytes, encodes, gives
// back what the encoding did not take, and holds the rest until the write
// ends, which WriteTimeout bounds.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, c caller, results []cacheapi.Result) {
	reserve := min(answerBound(results), cacheapi.MaxResponseBytes, s.o.MaxAnswerBytesInFlight)
	ctx, cancel := context.WithTimeout(r.Context(), s.o.ReviewWait)
	err := s.answers.Acquire(ctx, reserve)
	cancel()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		s.refuse(w, &refusal{http.StatusServiceUnavailable, reasonBusy,
			fmt.Sprintf("answers of %d bytes in all are being written and no room for this one freed up within %v: retry", s.o.MaxAnswerBytesInFlight, s.o.ReviewWait)})
		return
	}
	s.metrics.answerBytes.Add(float64(reserve))
	body := encodeAnswer(results, int(reserve))
	held := int64(len(body))
	s.answers.Release(reserve - held)
	s.metrics.answerBytes.Sub(float64(reserve - held))
	defer func() {
		s.answers.Release(held)
		s.metrics.answerBytes.Sub(float64(held))
	}()
	// Not every ResponseWriter has deadlines (tests); the servers' do.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if _, err := w.Write(body); err != nil {
		s.log.V(1).Info("write the response", "subject", c.Subject, "bytes", len(body), "error", err.Error())
	}
}

// admit proves the caller and decodes the request, in the order that
// costs the least to a caller that should be refused: a token that cannot
// be a live projected token is refused before anything is read, the body
// is read (bounded in bytes and time) before the TokenReview, and the rate
// limit comes after it, as only a proven subject has a bucket.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (caller, cacheapi.Request, *refusal) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return caller{}, cacheapi.Request{}, &refusal{http.StatusMethodNotAllowed, reasonMethod, "POST a request to " + cacheapi.Path}
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return caller{}, cacheapi.Request{}, &refusal{http.StatusUnsupportedMediaType, reasonContentType, "Content-Type must be application/json"}
	}
	token := bearerToken(r)
	if token == "" {
		return caller{}, cacheapi.Request{}, &refusal{http.StatusUnauthorized, reasonNoToken, "no bearer token: send the pod's projected service-account token in Authorization"}
	}
	if ref := precheckToken(token, time.Now()); ref != nil {
		return caller{}, cacheapi.Request{}, ref
	}
	// Not every ResponseWriter has deadlines (tests); the servers' do.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.o.ReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, cacheapi.MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return caller{}, cacheapi.Request{}, &refusal{http.StatusRequestTimeout, reasonSlowBody,
				fmt.Sprintf("the request body did not arrive within %v", s.o.ReadTimeout)}
		}
		if errors.As(err, &tooBig) {
			return caller{}, cacheapi.Request{}, &refusal{http.StatusRequestEntityTooLarge, reasonTooLarge,
				fmt.Sprintf("the request body is over %d bytes: ask for fewer secrets per request", cacheapi.MaxRequestBytes)}
		}
		return caller{}, cacheapi.Request{}, &refusal{http.StatusBadRequest, reasonBadRequest, fmt.Sprintf("read the request body: %v", err)}
	}
	st, busy, err := s.review(r.Context(), token)
	if busy {
		w.Header().Set("Retry-After", "1")
		return caller{}, cacheapi.Request{}, &refusal{http.StatusServiceUnavailable, reasonReviewBusy,
			fmt.Sprintf("%d token reviews are in flight and none ended within %v: retry", s.o.MaxConcurrentReviews, s.o.ReviewWait)}
	}
	if err != nil {
		s.log.Error(err, "token review failed")
		return caller{}, cacheapi.Request{}, &refusal{http.StatusServiceUnavailable, reasonReviewFailed, "the API server could not review the token; retry"}
	}
	now := s.o.Now()
	c, ref := proveCaller(st, token, now)
	if ref != nil {
		return caller{}, cacheapi.Request{}, ref
	}
	if ok, wait := s.limits.allow(c.Subject, now); !ok {
		secs := int64(math.Ceil(wait.Seconds()))
		if wait > time.Hour {
			secs = 3600
		}
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		return caller{}, cacheapi.Request{}, &refusal{http.StatusTooManyRequests, reasonRateLimited,
			fmt.Sprintf("%s made more than %v requests per second (burst %d): retry after %d s", c.Subject, s.o.RatePerSecond, s.o.RateBurst, secs)}
	}
	req, err := decodeRequest(body, s.o.Cloud)
	if err != nil {
		return caller{}, cacheapi.Request{}, &refusal{http.StatusBadRequest, reasonBadRequest, err.Error()}
	}
	return c, req, nil
}

// review asks the Reviewer once a slot is free; busy when none frees up
// within ReviewWait (or the request ends first).
func (s *Server) review(ctx context.Context, token string) (st authenticationv1.TokenReviewStatus, busy bool, err error) {
	wait := time.NewTimer(s.o.ReviewWait)
	defer wait.Stop()
	select {
	case s.reviews <- struct{}{}:
	case <-wait.C:
		return st, true, nil
	case <-ctx.Done():
		return st, true, nil
	}
	defer func() { <-s.reviews }()
	st, err = s.o.Reviewer.Review(ctx, token)
	return st, false, err
}

// refuse answers with the refusal's status and logs its exact reason.
func (s *Server) refuse(w http.ResponseWriter, ref *refusal) {
	s.metrics.refusals.WithLabelValues(ref.reason).Inc()
	s.log.Info("refused", "status", ref.status, "reason", ref.reason, "detail", ref.message)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(ref.status)
	_ = json.NewEncoder(w).Encode(cacheapi.Refusal{Reason: ref.reason, Error: ref.message})
}

func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// decodeRequest reads a request strictly: one JSON object of known fields,
// a valid identity, 1 to MaxSecretsPerRequest references, each a vault of
// the cache's cloud, a secret name and an optional version.
func decodeRequest(body []byte, cloud spec.Cloud) (cacheapi.Request, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req cacheapi.Request
	if err := dec.Decode(&req); err != nil {
		return cacheapi.Request{}, fmt.Errorf("the body is not a JSON request: %w", err)
	}
	if dec.More() {
		return cacheapi.Request{}, errors.New("the body holds more than one JSON value")
	}
	var errs []error
	if err := spec.ValidateClientID(req.ClientID); err != nil {
		errs = append(errs, fmt.Errorf("clientID: %w", err))
	}
	if err := spec.ValidateTenantID(req.TenantID); err != nil {
		errs = append(errs, fmt.Errorf("tenantID: %w", err))
	}
	switch n := len(req.Secrets); {
	case n == 0:
		errs = append(errs, errors.New("no secrets asked for"))
	case n > cacheapi.MaxSecretsPerRequest:
		errs = append(errs, fmt.Errorf("%d secrets asked for, at most %d per request", n, cacheapi.MaxSecretsPerRequest))
	}
	first := map[cacheapi.SecretRef]int{}
	for i, ref := range req.Secrets {
		if i >= cacheapi.MaxSecretsPerRequest {
			break
		}
		norm, err := validateRef(ref, cloud)
		if err != nil {
			errs = append(errs, fmt.Errorf("secrets[%d]: %w", i, err))
			continue
		}
		if j, ok := first[norm]; ok {
			errs = append(errs, fmt.Errorf("secrets[%d] repeats secrets[%d] (%s of %s): ask for each secret once", i, j, refLabel(norm), vaultHost(norm.Vault)))
			continue
		}
		first[norm] = i
		req.Secrets[i] = norm
	}
	if err := errors.Join(errs...); err != nil {
		return cacheapi.Request{}, err
	}
	req.ClientID, req.TenantID = strings.ToLower(req.ClientID), strings.ToLower(req.TenantID)
	return req, nil
}

// validateRef normalises a reference: the vault must be of the cache's
// cloud, so no request makes the cache send a token to another host.
func validateRef(ref cacheapi.SecretRef, cloud spec.Cloud) (cacheapi.SecretRef, error) {
	vault, err := spec.ParseVault(ref.Vault, cloud)
	if err != nil || !strings.Contains(ref.Vault, "://") {
		if err == nil {
			err = fmt.Errorf("vault %s must be a URL like https://NAME.%s", spec.Quote(ref.Vault), cloud.VaultSuffix)
		}
		return ref, err
	}
	short := ref.Name
	if ref.Version != "" {
		short += "/" + ref.Version
	}
	parsed, err := spec.ParseRef(short, vault, cloud)
	if err != nil {
		return ref, err
	}
	if parsed.Name != ref.Name || parsed.Version != ref.Version || parsed.Path != "" {
		return ref, fmt.Errorf("secret %s/%s is not a secret name and version", spec.Quote(ref.Name), spec.Quote(ref.Version))
	}
	return cacheapi.SecretRef{Vault: vault, Name: ref.Name, Version: ref.Version}, nil
}

func refLabel(r cacheapi.SecretRef) string {
	if r.Version != "" {
		return r.Name + "/" + r.Version
	}
	return r.Name
}

// lookupAll answers every reference, in parallel (at most
// MaxSecretsPerRequest), in request order.
func (s *Server) lookupAll(ctx context.Context, c caller, req cacheapi.Request, token string) []cacheapi.Result {
	id := identityKey{TenantID: req.TenantID, ClientID: req.ClientID, Subject: c.Subject}
	results := make([]cacheapi.Result, len(req.Secrets))
	var wg sync.WaitGroup
	for i, ref := range req.Secrets {
		wg.Go(func() { results[i] = s.lookup(ctx, id, token, ref) })
	}
	wg.Wait()
	return results
}
