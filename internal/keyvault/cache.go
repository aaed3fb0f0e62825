package keyvault

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

// CacheClient asks the kvinject cache for secrets, with the pod's own
// projected token as its bearer token. It trusts the spec's CA alone and
// never goes through HTTPS_PROXY: the cache is a Service of the cluster.
type CacheClient struct {
	endpoint  string // https://HOST[:PORT]/v1/secrets
	host      string
	http      *http.Client
	tokenFile string
	clientID  string
	tenantID  string
}

// NewCacheClient makes the client of the cache c names, for id (its
// TokenFile is the bearer token, read at each request). It makes no request.
func NewCacheClient(c *spec.Cache, id Identity) (*CacheClient, error) {
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
	return &CacheClient{
		endpoint:  base + cacheapi.Path,
		host:      strings.TrimPrefix(base, "https://"),
		http:      &http.Client{Transport: tr},
		tokenFile: id.TokenFile,
		clientID:  id.ClientID,
		tenantID:  id.TenantID,
	}, nil
}

// CloseIdle closes the idle connections: the next request opens a new one,
// which the cache's Service may send to another replica.
func (c *CacheClient) CloseIdle() { c.http.CloseIdleConnections() }

// Host is the cache's host[:port], for logs and diagnostics.
func (c *CacheClient) Host() string { return c.host }

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

// Outage says whether the cache had no answer from Azure for the secret
// (no answer, throttled, failed, or a value the cache will not hold),
// which reading directly may still get.
func (e *CacheSecretError) Outage() bool {
	st := e.Answer.Status
	return st == 0 || st == http.StatusTooManyRequests || st >= 500
}

// Read asks the cache for ids, in requests of at most
// cacheapi.MaxSecretsPerRequest, and returns one Result per id in order.
// The token is read from its file for each call: the kubelet renews it.
func (c *CacheClient) Read(ctx context.Context, ids []spec.SecretID) ([]cacheapi.Result, error) {
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

func (c *CacheClient) post(ctx context.Context, token string, ids []spec.SecretID) ([]cacheapi.Result, error) {
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
