package keyvault

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/internal/spec"
)

// retryOptions bound each request: azcore retries 408, 429, 500, 502, 503,
// 504 and transport errors, honouring Retry-After (and retry-after-ms), with
// exponential backoff; the agent's overall deadline bounds the sum.
var retryOptions = policy.RetryOptions{
	MaxRetries:    5,
	TryTimeout:    30 * time.Second,
	RetryDelay:    800 * time.Millisecond,
	MaxRetryDelay: 30 * time.Second,
}

// Clients are the agent's connections to Azure: one transport, one
// workload identity credential (the projected token's file), one azsecrets
// client per vault.
type Clients struct {
	dialer    *dialer
	transport *countingTransport
	cred      azcore.TokenCredential
	tro       policy.TokenRequestOptions // for the cloud's vaults
	suffix    string                     // the cloud's vault host suffix, e.g. vault.azure.net
	clients   map[string]Getter          // by vault URL
}

// NewClients makes the credential of id and a client for each of vaults,
// over one transport of at most maxConns connections per host. It makes no
// request.
func NewClients(id Identity, c spec.Cloud, vaults []string, maxConns int) (*Clients, error) {
	d := newDialer(nil)
	ct := &countingTransport{next: newTransport(d, maxConns)}
	hc := &http.Client{Transport: ct}
	base := azcore.ClientOptions{
		Transport: hc,
		Retry:     retryOptions,
		Telemetry: policy.TelemetryOptions{ApplicationID: "kvinject"},
	}
	credOpts := &azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: base,
		ClientID:      id.ClientID,
		TenantID:      id.TenantID,
		TokenFilePath: id.TokenFile,
		// MSAL asks login.microsoftonline.com which hosts are Entra ID
		// authorities; for the known clouds the answer is known.
		DisableInstanceDiscovery: id.KnownCloud(),
	}
	credOpts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: id.AuthorityHost}
	cred, err := azidentity.NewWorkloadIdentityCredential(credOpts)
	if err != nil {
		return nil, err
	}
	az := &Clients{
		dialer:    d,
		transport: ct,
		cred:      cred,
		suffix:    strings.ToLower(c.VaultSuffix),
		tro: policy.TokenRequestOptions{
			Scopes:    []string{Scope(c)},
			EnableCAE: true, // as azsecrets asks, so both share MSAL's cache
		},
		clients: map[string]Getter{},
	}
	for _, v := range vaults {
		co := &azsecrets.ClientOptions{ClientOptions: base}
		co.PerRetryPolicies = []policy.Policy{recorderPolicy{}, &preauthPolicy{az: az}}
		c, err := azsecrets.NewClient(v, cred, co)
		if err != nil {
			return nil, err
		}
		az.clients[v] = azGetter{c}
	}
	return az, nil
}

// Getters are the vaults' clients, by vault URL.
func (az *Clients) Getters() map[string]Getter { return az.clients }

// Warm starts opening the connection to vault's host.
func (az *Clients) Warm(ctx context.Context, vault string) { az.dialer.Warm(ctx, hostOf(vault)) }

// Requests is the number of HTTPS requests made so far.
func (az *Clients) Requests() int64 { return az.transport.requests.Load() }

// CloseIdle closes the idle connections, so that the next requests open
// new ones.
func (az *Clients) CloseIdle() { az.transport.next.CloseIdleConnections() }

// Close closes idle and warm connections.
func (az *Clients) Close() {
	az.dialer.Close()
	az.transport.next.CloseIdleConnections()
}

// SignIn acquires the Key Vault access token once, before the reads.
func (az *Clients) SignIn(ctx context.Context) error {
	_, err := az.cred.GetToken(ctx, az.tro)
	return err
}

// preauthPolicy saves Key Vault's 401 challenge round trip. azsecrets'
// challenge policy sends the first request of a client without a token to
// learn the tenant and scope from the 401; both are known here (the
// credential's tenant, and https://<cloud vault suffix>/.default). The
// policy runs after the challenge policy in the pipeline (ClientOptions
// per-retry policies come after the client's own), so it only adds a token
// to requests that have none, and only for hosts of the cloud's vault
// suffix, so no token ever goes elsewhere. Should Key Vault still answer
// 401 with a challenge (e.g. a vault in another tenant), the SDK's
// challenge handling takes over unchanged.
type preauthPolicy struct{ az *Clients }

func (p *preauthPolicy) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	if raw.Header.Get("Authorization") == "" && raw.URL.Scheme == "https" && hostHasSuffix(strings.ToLower(raw.URL.Hostname()), p.az.suffix) {
		tk, err := p.az.cred.GetToken(raw.Context(), p.az.tro)
		if err != nil {
			return nil, err // *AuthenticationFailedError is NonRetriable
		}
		raw.Header.Set("Authorization", "Bearer "+tk.Token)
	}
	return req.Next()
}

type attemptsKey struct{}

// WithAttempts returns ctx that records in at the tries of a read made
// with it, for Diagnoser.Read.
func WithAttempts(ctx context.Context, at *Attempts) context.Context {
	return context.WithValue(ctx, attemptsKey{}, at)
}

// recorderPolicy counts the tries of a request and keeps the last status
// and error code, for a timeout's diagnostic.
type recorderPolicy struct{}

func (recorderPolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if at, ok := req.Raw().Context().Value(attemptsKey{}).(*Attempts); ok {
		at.n++
		if resp != nil {
			at.lastStatus = resp.StatusCode
			at.lastCode = resp.Header.Get("x-ms-error-code")
			if at.lastCode == "" && resp.StatusCode >= 400 {
				// An error body, never a secret bundle: read its code.
				var body kvError
				if b, err := runtime.Payload(resp); err == nil && json.Unmarshal(b, &body) == nil {
					at.lastCode = body.Error.Code
				}
			}
		}
	}
	return resp, err
}

type azGetter struct{ c *azsecrets.Client }

func (g azGetter) GetSecret(ctx context.Context, name, version string) (Secret, error) {
	resp, err := g.c.GetSecret(ctx, name, version, nil)
	if err != nil {
		return Secret{}, err
	}
	var s Secret
	if resp.Value != nil {
		s.Value = *resp.Value
	}
	if resp.ID != nil {
		s.Version = resp.ID.Version()
	}
	if resp.ContentType != nil {
		s.ContentType = *resp.ContentType
	}
	if resp.Attributes != nil && resp.Attributes.Created != nil {
		s.Created = *resp.Attributes.Created
	}
	return s, nil
}

// countingTransport counts HTTP requests, for the final log line, and
// tells upstream (when set) of each request and of the bytes read.
type countingTransport struct {
	next     *hostGatedTransport
	requests atomic.Int64
	upstream UpstreamCounter
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	if t.upstream == nil {
		return t.next.RoundTrip(r)
	}
	t.upstream.UpstreamRequest()
	resp, err := t.next.RoundTrip(r)
	if resp != nil && resp.Body != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, upstream: t.upstream}
	}
	return resp, err
}

// Scope is the token scope of a cloud's vaults.
func Scope(c spec.Cloud) string { return "https://" + c.VaultSuffix + "/.default" }
