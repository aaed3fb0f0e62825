package spec

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Cache is the cluster cache (kvinject cache) the agent and the refresh
// sidecar ask before Azure, when the webhook was given one (--cache-url)
// and the pod opts in (AnnotationCache).
type Cache struct {
	// URL is the cache's https:// URL: scheme, host and port, nothing more
	// (the agent posts to cacheapi.Path on it).
	URL string `json:"url"`
	// CA is the PEM bundle of the certificates that sign the cache's
	// serving certificate. The agent trusts these alone for the cache: no
	// system root can vouch for a cache impostor.
	CA string `json:"ca"`
	// Required forbids reading from Azure directly: when the cache cannot
	// be reached, the agent fails with the cache's problem instead.
	Required bool `json:"required,omitempty"`
}

// Values of AnnotationCache.
const (
	// CacheOn: ask the cache, and read from Azure directly when it
	// cannot be reached.
	CacheOn = "true"
	// CacheRequired: ask the cache only.
	CacheRequired = "required"
	// CacheOff: never ask the cache.
	CacheOff = "false"
)

// MaxCacheCABytes bounds Cache.CA: it travels in every opted-in pod's spec.
const MaxCacheCABytes = 16 << 10

// ValidateCacheURL accepts an https:// URL of a host and an optional port,
// without a user, path, query or fragment.
func ValidateCacheURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s is not a URL", Quote(s))
	}
	if u.Scheme != "https" || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%s must be an https:// URL with a host (like https://kvinject-cache.kvinject-system.svc.cluster.local.)", Quote(s))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%s must be just https://HOST[:PORT]: no user, path, query or fragment", Quote(s))
	}
	return nil
}

// ErrCacheURLNotQualified: a cache URL's host is a DNS name without a
// trailing dot, which a pod's resolver looks up through its search path.
var ErrCacheURLNotQualified = errors.New("not fully qualified")

// ValidateQualifiedCacheURL is ValidateCacheURL for the URL the webhook
// gives pods: its host must be an IP address or a fully qualified name
// with a trailing dot (https://kvinject-cache.kvinject-system.svc.cluster.local.).
// A pod's resolver tries a name of fewer than five dots under each search
// domain first (NAMESPACE.svc.cluster.local, svc.cluster.local, ...), so
// kvinject-cache.kvinject-system.svc would first be asked as
// kvinject-cache.kvinject-system.svc.NAMESPACE.svc.cluster.local and
// whoever can create a namespace named svc could answer it.
func ValidateQualifiedCacheURL(s string) error {
	if err := ValidateCacheURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	host := u.Hostname()
	if net.ParseIP(host) != nil || strings.HasSuffix(host, ".") {
		return nil
	}
	return fmt.Errorf("%s is %w: a pod would look %s up through its DNS search path; name the host with the cluster domain and a trailing dot (like https://%s.cluster.local.)",
		Quote(s), ErrCacheURLNotQualified, host, strings.TrimSuffix(host, ".svc")+".svc")
}

// ParseCacheCA parses a PEM bundle of CA certificates: at least one
// CERTIFICATE block, nothing else but whitespace, at most MaxCacheCABytes.
func ParseCacheCA(pemBytes []byte) ([]*x509.Certificate, error) {
	if len(pemBytes) > MaxCacheCABytes {
		return nil, fmt.Errorf("the CA bundle is %d bytes, over %d", len(pemBytes), MaxCacheCABytes)
	}
	var certs []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("the CA bundle holds a %s block: want only CERTIFICATE blocks", Quote(block.Type))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the CA bundle's certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("the CA bundle holds text that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("the CA bundle holds no certificate")
	}
	return certs, nil
}

// Validate checks what the webhook guarantees of a Cache.
func (c *Cache) Validate() error {
	if err := ValidateCacheURL(c.URL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if _, err := ParseCacheCA([]byte(c.CA)); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}
