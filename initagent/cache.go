package initagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/spec"
)

// Bounds of one request to the cache.
const (
	// cacheDialTimeout bounds connecting to the cache: it runs in the
	// cluster, so a slow connect means it is not there.
	cacheDialTimeout = 5 * time.Second
	// cacheAnswerTimeout bounds waiting for the answer: a miss makes the
	// cache read Key Vault, which it bounds at 30 s.
	cacheAnswerTimeout = 40 * time.Second
	// maxCacheAnswerBytes bounds the answer to one request: every value at
	// the cache's limit, each character escaped as \u00XX.
	maxCacheAnswerBytes = cacheapi.MaxSecretsPerRequest*(6*cacheapi.MaxValueBytes+4<<10) + 4<<10
)

// cacheClient asks the kvinject cache for secrets, with the pod's own
// projected token as its bearer token. It trusts the spec's CA alone and
// never goes through HTTPS_PROXY: the cache is a Service of the cluster.
type cacheClient struct {
	endpoint  string // https://HOST[:PORT]/v1/secrets
	host      string
	http      *http.Client
	tokenFile string
	clientID  string
	tenantID  string
}

func newCacheClient(c *spec.Cache, id identity) (*cacheClient, error) {
	certs, err := spec.ParseCacheCA([]byte(c.CA))
	if err != nil {
		return nil, fmt.Errorf("the cache's CA: %w", err)
	}
	roots := x509.NewCertPool()
	for _, cert := range certs {
		roots.AddCert(cert)
	}
	dialer := &net.Dialer{Timeout: cacheDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ClientSessionCache: tls.NewLRUClientSessionCache(2)},
		TLSHandshakeTimeout:   cacheDialTimeout,
		ResponseHeaderTimeout: cacheAnswerTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	base := strings.TrimSuffix(c.URL, "/")
	return &cacheClient{
		endpoint:  base + cacheapi.Path,
		host:      strings.TrimPrefix(base, "https://"),
		http:      &http.Client{Transport: tr},
		tokenFile: id.tokenFile,
		clientID:  id.clientID,
		tenantID:  id.tenantID,
	}, nil
}

func (c *cacheClient) closeIdle() { c.http.CloseIdleConnections() }

// CacheUnavailableError says the cache gave no answer to a request: it
// could not be reached, or it refused the request as a whole.
type CacheUnavailableError struct {
	// Status is the cache's HTTP status; 0 when no answer came.
	Status int
	// Reason is the cache's one-word reason for a refusal
	// (cacheapi.Refusal.Reason), empty when no answer came.
	Reason string
	err    error
}

func (e *CacheUnavailableError) Error() string { return e.err.Error() }
func (e *CacheUnavailableError) Unwrap() error { return e.err }

// CacheSecretError is the cache's answer that one secret has no value: the
// diagnosis it made reading Key Vault or Entra ID for the pod.
type CacheSecretError struct{ Answer cacheapi.Error }

func (e *CacheSecretError) Error() string {
	if e.Answer.Code != "" {
		return fmt.Sprintf("the cache answered %d %s: %s", e.Answer.Status, e.Answer.Code, e.Answer.Cause)
	}
	return "the cache answered: " + e.Answer.Cause
}

// outage says whether the cache had no answer from Azure for the secret
// (no answer, throttled, failed, or a value the cache will not hold),
// which reading directly may still get.
func (e *CacheSecretError) outage() bool {
	st := e.Answer.Status
	return st == 0 || st == http.StatusTooManyRequests || st >= 500
}

// read asks the cache for ids, in requests of at most
// cacheapi.MaxSecretsPerRequest, and returns one Result per id in order.
// The token is read from its file for each call: the kubelet renews it.
func (c *cacheClient) read(ctx context.Context, ids []spec.SecretID) ([]cacheapi.Result, error) {
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, &CacheUnavailableError{err: fmt.Errorf("read the token for the cache: %w", err)}
	}
	results := make([]cacheapi.Result, 0, len(ids))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), cacheapi.MaxSecretsPerRequest)]
		ids = ids[len(batch):]
		got, err := c.post(ctx, strings.TrimSpace(string(token)), batch)
		if err != nil {
			return nil, err
		}
		results = append(results, got...)
	}
	return results, nil
}

func (c *cacheClient) post(ctx context.Context, token string, ids []spec.SecretID) ([]cacheapi.Result, error) {
	req := cacheapi.Request{ClientID: c.clientID, TenantID: c.tenantID, Secrets: make([]cacheapi.SecretRef, len(ids))}
	for i, id := range ids {
		req.Secrets[i] = cacheapi.SecretRef{Vault: id.Vault, Name: id.Name, Version: id.Version}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &CacheUnavailableError{err: fmt.Errorf("encode the request: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, cacheAnswerTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, &CacheUnavailableError{err: fmt.Errorf("the request: %w", err)}
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, &CacheUnavailableError{err: transportCause(err, c.host)}
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCacheAnswerBytes+1))
	if err != nil {
		return nil, &CacheUnavailableError{err: transportCause(err, c.host)}
	}
	if resp.StatusCode != http.StatusOK {
		var ref cacheapi.Refusal
		if json.Unmarshal(data, &ref) != nil || ref.Reason == "" {
			return nil, &CacheUnavailableError{Status: resp.StatusCode,
				err: fmt.Errorf("the cache at %s answered %d", c.host, resp.StatusCode)}
		}
		return nil, &CacheUnavailableError{Status: resp.StatusCode, Reason: ref.Reason,
			err: fmt.Errorf("the cache at %s refused the request (%d %s): %s", c.host, resp.StatusCode, ref.Reason, firstLine(ref.Error))}
	}
	if len(data) > maxCacheAnswerBytes {
		return nil, &CacheUnavailableError{Status: resp.StatusCode, err: fmt.Errorf("the cache at %s answered more than %d bytes", c.host, maxCacheAnswerBytes)}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, &CacheUnavailableError{Status: resp.StatusCode, err: fmt.Errorf("the cache at %s answered %q, not JSON", c.host, mt)}
	}
	var answer cacheapi.Response
	// The error of a failed decode can quote the body, which holds values.
	if json.Unmarshal(data, &answer) != nil {
		return nil, &CacheUnavailableError{Status: resp.StatusCode, err: fmt.Errorf("the cache at %s answered JSON that is not a cache response", c.host)}
	}
	if len(answer.Secrets) != len(ids) {
		return nil, &CacheUnavailableError{Status: resp.StatusCode,
			err: fmt.Errorf("the cache at %s answered %d results for %d secrets", c.host, len(answer.Secrets), len(ids))}
	}
	for i, r := range answer.Secrets {
		if r.Ref != req.Secrets[i] {
			return nil, &CacheUnavailableError{Status: resp.StatusCode,
				err: fmt.Errorf("the cache at %s answered result %d for another secret", c.host, i+1)}
		}
	}
	return answer.Secrets, nil
}

// transportCause names the host and the failure, never a body.
func transportCause(err error, host string) error {
	var dnsErr *net.DNSError
	var ue *url.Error
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Errorf("cannot resolve %s (%s)", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from the cache at %s within %v", host, cacheAnswerTimeout)
	case errors.As(err, &ue):
		return fmt.Errorf("cannot reach the cache at %s: %w", host, ue.Err)
	}
	return fmt.Errorf("cannot reach the cache at %s: %w", host, err)
}

// askCache reads ids from the cache into results. It returns the ids to
// read from Azure directly: all of them when the cache cannot answer, and
// those it had no answer from Azure for; none when the spec requires the
// cache, whose failures are then problems.
func (a *Agent) askCache(ctx context.Context, c *cacheClient, ids []spec.SecretID, results map[spec.SecretID]*fetchResult) (direct []spec.SecretID, problems []Problem) {
	log := a.o.Logger
	required := a.o.Spec.Cache.Required
	t0 := time.Now()
	answers, err := c.read(ctx, ids)
	if err == nil {
		answers = a.askAgain(ctx, c, ids, answers)
	}
	if err != nil {
		if required {
			return nil, a.cacheProblems(c, err, ids)
		}
		kv := []any{"cache", c.host, "reason", err.Error()}
		var cu *CacheUnavailableError
		if errors.As(err, &cu) && cu.Reason != "" {
			kv = append(kv, "refusal", cu.Reason)
		}
		log.Info("the cache did not answer: reading from Azure directly", kv...)
		return ids, nil
	}
	served, stale := 0, 0
	for i, id := range ids {
		r := answers[i]
		if r.Error != nil {
			ce := &CacheSecretError{Answer: *r.Error}
			if ce.outage() && !required {
				log.Info("the cache has no value: reading it from Azure directly", "vault", hostOf(id.Vault), "name", id.Name,
					"status", ce.Answer.Status, "code", ce.Answer.Code, "reason", ce.Answer.Cause)
				direct = append(direct, id)
				continue
			}
			results[id] = &fetchResult{err: ce, at: &attempts{}}
			continue
		}
		served++
		s := Secret{Value: r.Value, Version: r.Version, ContentType: r.ContentType}
		if r.Created > 0 {
			s.Created = time.Unix(r.Created, 0)
		}
		results[id] = &fetchResult{secret: s, at: &attempts{}}
		if r.Stale {
			stale++
			log.Info("the cache served a stale value: it could not reach Azure to renew it", "vault", hostOf(id.Vault), "name", id.Name,
				"version", r.Version, "ageSeconds", r.AgeSeconds)
		} else {
			log.V(a.fetchLogV).Info("fetched secret", "vault", hostOf(id.Vault), "name", id.Name, "version", r.Version,
				"bytes", len(r.Value), "from", "cache", "ageSeconds", r.AgeSeconds)
		}
	}
	log.V(a.fetchLogV).Info("asked the cache", "cache", c.host, "secrets", len(ids), "served", served, "stale", stale,
		"direct", len(direct), "durationMs", time.Since(t0).Milliseconds())
	a.fromCache.served += served
	a.fromCache.stale += stale
	return direct, nil
}

// askAgain asks the cache once more, on a new connection, for the secrets
// it had no value for because it could not reach Azure. Each replica of
// the cache holds what it read itself, and the Service sends a new
// connection to any replica: one that never read a secret has nothing to
// serve during an outage while another still holds the value. Without it
// a pod that drew such a replica read Azure directly, failing for as long
// as the outage lasted.
func (a *Agent) askAgain(ctx context.Context, c *cacheClient, ids []spec.SecretID, answers []cacheapi.Result) []cacheapi.Result {
	var again []spec.SecretID
	var at []int
	for i, r := range answers {
		if r.Error != nil && (&CacheSecretError{Answer: *r.Error}).outage() {
			again, at = append(again, ids[i]), append(at, i)
		}
	}
	if len(again) == 0 {
		return answers
	}
	c.closeIdle()
	more, err := c.read(ctx, again)
	if err != nil {
		a.o.Logger.Info("asked the cache again on a new connection: no answer", "secrets", len(again), "reason", err.Error())
		return answers
	}
	got := 0
	for j, r := range more {
		if r.Error == nil {
			answers[at[j]] = r
			got++
		}
	}
	a.o.Logger.Info("asked the cache again on a new connection, as another replica may hold what this one could not read",
		"secrets", len(again), "served", got)
	return answers
}

// cacheProblems is a required cache that did not answer, said once per
// vault it kept from reading.
func (a *Agent) cacheProblems(c *cacheClient, err error, ids []spec.SecretID) []Problem {
	fix := fmt.Sprintf("the pod requires the cache (%s: %q): check that it runs (kubectl -n kvinject-system get pods -l app.kubernetes.io/component=cache) "+
		"and that the pod's namespace may reach it; or set %s: %q to read from Azure directly when the cache cannot answer",
		spec.AnnotationCache, spec.CacheRequired, spec.AnnotationCache, spec.CacheOn)
	var cu *CacheUnavailableError
	if errors.As(err, &cu) && cu.Status == http.StatusUnauthorized {
		fix = "the cache accepts only a live token of a running pod for the audience " + spec.TokenAudience +
			": check the pod's projected token (the cache's log names the exact reason)"
	}
	var problems []Problem
	for _, v := range distinctVaults(ids) {
		problems = append(problems, Problem{Vault: v, Secret: secretsOf(ids, v), Cause: err.Error(), Fix: fix})
	}
	return problems
}
