package keyvault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/internal/spec"
)

// ReaderOptions configure a Reader. NewReader validates them once.
type ReaderOptions struct {
	// ClientID and TenantID name the workload identity.
	ClientID, TenantID string
	// ServiceAccountToken is the token exchanged with Entra ID. Only its
	// claims ever appear in a diagnostic.
	ServiceAccountToken string
	// Assertion, when set, replaces ServiceAccountToken: it is asked for a
	// token at each exchange, so that a long-lived Reader signs in with the
	// newest token its program holds. Diagnostics read the claims of the
	// last token it gave.
	Assertion func(context.Context) (string, error)
	// Proxy and RootCAs replace HTTPS_PROXY/NO_PROXY and the system roots,
	// for a program that serves many identities in one process (and its
	// tests). Nil: the environment's.
	Proxy   func(*http.Request) (*url.URL, error)
	RootCAs *x509.CertPool
	// Retry replaces the agent's retries (retryOptions) when not nil.
	Retry *policy.RetryOptions
	// Upstream, when not nil, is told of each HTTPS request and of the
	// response bytes read (metrics).
	Upstream UpstreamCounter
	// Cloud gives the default authority host, whether instance discovery
	// may be skipped and the Key Vault token scope. Zero: the public cloud.
	Cloud spec.Cloud
	// AuthorityHost overrides the cloud's (AZURE_AUTHORITY_HOST); https.
	AuthorityHost string
	// Timeout is the caller's overall time limit, which a diagnostic names
	// when it ran out; the caller's context enforces it.
	Timeout time.Duration
	// Now replaces time.Now in diagnostics (tests).
	Now func() time.Time
}

// Reader reads Key Vault secrets as one workload identity, over the
// agent's transport (HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE honoured,
// HTTP/2), retries and Key Vault pre-authorization, and explains failures
// with the agent's diagnostics. It is for programs of kvinject other than
// the agent that hold a service-account token themselves, such as the
// kubelet credential provider.
type Reader struct {
	mu   sync.Mutex // guards az.clients: Read may run concurrently
	az   *Clients
	base azcore.ClientOptions // shared by the credential and the vault clients
	diag Diagnoser
}

// ReadError is a failed read, explained as the agent explains it.
type ReadError struct {
	Problem Problem
	err     error
}

// Error is the problem's public line: no token, no value, no Detail.
func (e *ReadError) Error() string { return e.Problem.Public() }

// Unwrap gives the SDK's error, for errors.Is and errors.As. Never print
// it: an SDK error's text can quote a response body.
func (e *ReadError) Unwrap() error { return e.err }

// NewReader validates o and builds the credential and the transport. It
// makes no request.
func NewReader(o ReaderOptions) (*Reader, error) {
	if o.Cloud.Name == "" {
		o.Cloud = spec.PublicCloud()
	}
	if err := spec.ValidateClientID(o.ClientID); err != nil {
		return nil, err
	}
	if err := spec.ValidateTenantID(o.TenantID); err != nil {
		return nil, err
	}
	if o.ServiceAccountToken == "" && o.Assertion == nil {
		return nil, errors.New("no service-account token")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	authority, err := spec.ParseAuthorityHost(o.AuthorityHost, o.Cloud)
	if err != nil {
		return nil, fmt.Errorf("authority host %w", err)
	}
	id := Identity{ClientID: o.ClientID, TenantID: o.TenantID, AuthorityHost: authority}
	d := newDialer(o.RootCAs)
	if o.Proxy != nil {
		d.proxy = o.Proxy
	}
	ct := &countingTransport{next: newTransport(d, 2), upstream: o.Upstream}
	retry := retryOptions
	if o.Retry != nil {
		retry = *o.Retry
	}
	base := azcore.ClientOptions{
		Transport: &http.Client{Transport: ct},
		Retry:     retry,
		Telemetry: policy.TelemetryOptions{ApplicationID: "kvinject"},
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: id.AuthorityHost},
	}
	var lastToken atomic.Pointer[string]
	lastToken.Store(&o.ServiceAccountToken)
	assertion := func(ctx context.Context) (string, error) {
		if o.Assertion == nil {
			return o.ServiceAccountToken, nil
		}
		tok, err := o.Assertion(ctx)
		if err == nil {
			lastToken.Store(&tok)
		}
		return tok, err
	}
	cred, err := azidentity.NewClientAssertionCredential(id.TenantID, id.ClientID, assertion,
		&azidentity.ClientAssertionCredentialOptions{ClientOptions: base, DisableInstanceDiscovery: id.KnownCloud()})
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("credential for client id %s: %w", id.ClientID, err)
	}
	az := &Clients{
		dialer:    d,
		transport: ct,
		cred:      cred,
		suffix:    strings.ToLower(o.Cloud.VaultSuffix),
		tro:       policy.TokenRequestOptions{Scopes: []string{Scope(o.Cloud)}, EnableCAE: true},
		clients:   map[string]Getter{},
	}
	return &Reader{
		az:   az,
		base: base,
		diag: Diagnoser{
			Identity: id, Timeout: o.Timeout, Now: o.Now,
			Claims: func() (TokenClaims, error) { return ParseTokenClaims(*lastToken.Load()) },
		},
	}, nil
}

// Read fetches one secret version. A failure is a *ReadError.
func (r *Reader) Read(ctx context.Context, id spec.SecretID) (Secret, error) {
	g, err := r.getter(id.Vault)
	if err != nil {
		return Secret{}, &ReadError{err: err, Problem: Problem{Vault: id.Vault, Secret: Label(id),
			Cause: "the vault URL is not usable: " + err.Error(), Fix: "check the reference"}}
	}
	at := &Attempts{}
	s, err := g.GetSecret(WithAttempts(ctx, at), id.Name, id.Version)
	if err == nil {
		return s, nil
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The deadline ended the retries, whatever error the last try
		// left: say so, with what the tries got.
		return Secret{}, &ReadError{err: err, Problem: Problem{Vault: id.Vault, Secret: Label(id),
			Cause: fmt.Sprintf("gave up when the time limit of %v ran out%s", r.diag.Timeout, at.summary()),
			Fix: fmt.Sprintf("check egress to %s:443 and %s:443 (network policy, proxy, firewall); if Key Vault is throttling (429), spread the load",
				hostOf(r.diag.Identity.AuthorityHost), hostOf(id.Vault))}}
	}
	return Secret{}, &ReadError{err: err, Problem: r.diag.Read(id, err, at)}
}

// getter returns the vault's client, made on first use with the agent's
// policies: the attempt recorder and the pre-authorization.
func (r *Reader) getter(vault string) (Getter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g, ok := r.az.clients[vault]; ok {
		return g, nil
	}
	co := &azsecrets.ClientOptions{ClientOptions: r.base}
	co.PerRetryPolicies = []policy.Policy{recorderPolicy{}, &preauthPolicy{az: r.az}}
	c, err := azsecrets.NewClient(vault, r.az.cred, co)
	if err != nil {
		return nil, err
	}
	r.az.clients[vault] = azGetter{c}
	return r.az.clients[vault], nil
}

// Requests is the number of HTTPS requests made so far.
func (r *Reader) Requests() int64 { return r.az.Requests() }

// Close closes idle and warm connections.
func (r *Reader) Close() { r.az.Close() }
