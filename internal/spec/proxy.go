package spec

import (
	"errors"
	"net/url"
	"strings"
)

// ErrProxyCredentials is a proxy URL that carries a user or password.
var ErrProxyCredentials = errors.New("must not carry a user or password")

// ValidateProxyURL checks an HTTPS_PROXY value that kvinject writes where
// others read it (every injected pod's spec, a node's kubelet config): an
// http:// or https:// URL with a host, and no user or password
// (ErrProxyCredentials). Its errors never quote raw, which may hold one.
func ValidateProxyURL(raw string) error {
	// Go's proxy reader takes user:pw@host:3128, which has no scheme, for
	// http://user:pw@host:3128.
	if strings.Contains(raw, "@") {
		return ErrProxyCredentials
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil {
		return ErrProxyCredentials
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("must be an http:// or https:// URL with a host")
	}
	return nil
}
