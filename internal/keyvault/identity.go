package keyvault

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/spec"
)

// Secret is one secret version as read. Value is never logged.
type Secret struct {
	Value string
	// Version is the version id Key Vault returned (32 hex digits).
	Version     string
	ContentType string
	// Created is when Key Vault created the version (its
	// attributes.created); zero when not known.
	Created time.Time
}

// Getter reads secrets from one vault. The production implementation
// wraps azsecrets.Client; errors are *azcore.ResponseError,
// *azidentity.AuthenticationFailedError or transport errors.
type Getter interface {
	GetSecret(ctx context.Context, name, version string) (Secret, error)
}

// Identity is the workload identity a credential signs in as.
type Identity struct {
	ClientID, TenantID string
	// TokenFile is the projected service-account token the agent's
	// credential reads; empty for a Reader, which is given its token.
	TokenFile string
	// AuthorityHost is Entra ID's URL, as AuthorityHost returns it.
	AuthorityHost string
}

// KnownCloud reports whether the authority host is one of a known public
// cloud's, so that instance discovery can be skipped safely.
func (id Identity) KnownCloud() bool {
	for _, name := range spec.CloudNames() {
		c, _ := spec.LookupCloud(name)
		if strings.EqualFold(c.AuthorityHost, id.AuthorityHost) {
			return true
		}
	}
	return false
}

// Host is the lower-case host name of a vault or authority URL, "" when it
// does not parse.
func Host(rawURL string) string { return hostOf(rawURL) }

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

func hostHasSuffix(host, suffix string) bool {
	return suffix != "" && strings.HasSuffix(host, "."+strings.ToLower(suffix))
}
