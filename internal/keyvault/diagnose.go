package keyvault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/kvinject/kvinject/internal/spec"
)

// RoleSecretsUser is the built-in role that lets an identity read secret
// values.
const RoleSecretsUser = "Key Vault Secrets User"

// Problem is one thing that kept the agent from writing the files. String
// renders it as one line: where (vault, secret, files), the cause, the fix.
// No field ever holds a secret value or a token.
type Problem struct {
	Vault  string   // vault URL
	Secret string   // name, name/version or name#path
	Files  []string // files affected, when known
	Env    []string // environment variables affected, when known
	Cause  string
	// Detail is for the container log only, which needs pods/log: what
	// the pod author did not type and a reader of the pod should not learn
	// from its termination message (get pods), such as a secret's other
	// key names or the vault's resource id with its subscription.
	Detail string
	Fix    string
}

// String is the problem as one line, Detail included: the container log's.
func (p Problem) String() string { return p.line(true) }

// Public is the problem as one line without Detail: the termination
// message's, which anyone who can get the pod reads.
func (p Problem) Public() string { return p.line(false) }

func (p Problem) line(detail bool) string {
	var b strings.Builder
	b.WriteString("error: ")
	var where []string
	if p.Vault != "" {
		where = append(where, "vault "+displayVault(p.Vault))
	}
	if strings.Contains(p.Secret, ", ") {
		where = append(where, "secrets "+p.Secret)
	} else if p.Secret != "" {
		where = append(where, "secret "+p.Secret)
	}
	if len(p.Files) == 1 {
		where = append(where, "file "+p.Files[0])
	} else if len(p.Files) > 1 {
		where = append(where, "files "+strings.Join(p.Files, ", "))
	}
	if len(p.Env) > 0 {
		where = append(where, "env "+strings.Join(p.Env, ", "))
	}
	if len(where) > 0 {
		b.WriteString(strings.Join(where, ", "))
		b.WriteString(": ")
	}
	b.WriteString(strings.TrimSuffix(p.Cause, "."))
	if detail && p.Detail != "" {
		b.WriteString(" (")
		b.WriteString(p.Detail)
		b.WriteString(")")
	}
	if p.Fix != "" {
		b.WriteString(". Fix: ")
		b.WriteString(strings.TrimSuffix(p.Fix, "."))
	}
	return oneLine(b.String())
}

// displayVault shows a vault by host name (homelab-kv.vault.azure.net).
func displayVault(v string) string {
	if h := hostOf(v); h != "" {
		return h
	}
	return v
}

func vaultName(v string) string {
	name, _, _ := strings.Cut(hostOf(v), ".")
	return name
}

var spaces = regexp.MustCompile(`[\r\n\t]+`)

func oneLine(s string) string { return spaces.ReplaceAllString(s, " ") }

// Label names a secret version in a diagnostic: name or name/version.
func Label(id spec.SecretID) string {
	if id.Version == "" {
		return id.Name
	}
	return id.Name + "/" + id.Version
}

// TokenClaims are the claims of the projected service-account token that
// matter to a federated credential. They are public: issuer, subject,
// audience, times. The token itself is never printed.
type TokenClaims struct {
	Issuer                      string
	Subject                     string
	Audience                    []string
	IssuedAt, NotBefore, Expiry time.Time
}

// ReadTokenClaims decodes the payload of the JWT in file, without verifying
// it. Errors never quote the file's content.
func ReadTokenClaims(file string) (TokenClaims, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return TokenClaims{}, err
	}
	return ParseTokenClaims(strings.TrimSpace(string(b)))
}

// ParseTokenClaims decodes a JWT's payload without verifying it.
func ParseTokenClaims(jwt string) (TokenClaims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return TokenClaims{}, fmt.Errorf("the token is not a JWT (%d dot-separated parts, want 3)", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return TokenClaims{}, errors.New("the token's payload is not base64url")
	}
	var c struct {
		Iss string          `json:"iss"`
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Iat json.Number     `json:"iat"`
		Nbf json.Number     `json:"nbf"`
		Exp json.Number     `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return TokenClaims{}, errors.New("the token's payload is not a JSON object of claims")
	}
	tc := TokenClaims{Issuer: c.Iss, Subject: c.Sub}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		tc.Audience = []string{one}
	} else {
		_ = json.Unmarshal(c.Aud, &tc.Audience)
	}
	unix := func(n json.Number) time.Time {
		if f, err := n.Float64(); err == nil && f > 0 {
			return time.Unix(int64(f), 0).UTC()
		}
		return time.Time{}
	}
	tc.IssuedAt, tc.NotBefore, tc.Expiry = unix(c.Iat), unix(c.Nbf), unix(c.Exp)
	return tc, nil
}

// String shows the claims a federated credential matches on.
func (c TokenClaims) String() string {
	exp := "none"
	if !c.Expiry.IsZero() {
		exp = c.Expiry.Format(time.RFC3339)
	}
	return fmt.Sprintf("iss=%q sub=%q aud=%q exp=%s", c.Issuer, c.Subject, strings.Join(c.Audience, ","), exp)
}

// Diagnoser explains failed reads: it is what a diagnosis may mention
// besides the error.
type Diagnoser struct {
	// Identity is the identity that signed in; its TokenFile, when set, is
	// named by a diagnosis of a missing token.
	Identity Identity
	// Timeout is the caller's time limit, named when it ran out.
	Timeout time.Duration
	// TimeLimit names Timeout in a cause, e.g. "the agent's time limit";
	// empty: "the time limit".
	TimeLimit string
	// RaiseTimeout is how a fix says to raise Timeout, e.g. "raise
	// --timeout"; empty: the fix names none.
	RaiseTimeout string
	// Now replaces time.Now (tests); nil: time.Now.
	Now func() time.Time
	// Claims reads the claims of the token that was exchanged, lazily;
	// nil: none are named.
	Claims func() (TokenClaims, error)
}

// timeLimit names d.Timeout in a cause.
func (d Diagnoser) timeLimit() string {
	if d.TimeLimit == "" {
		return "the time limit"
	}
	return d.TimeLimit
}

// raiseOr is the fix "RaiseTimeout or alt", or alt alone.
func (d Diagnoser) raiseOr(alt string) string {
	if d.RaiseTimeout == "" {
		return alt
	}
	return d.RaiseTimeout + " or " + alt
}

// entraError is the JSON error body of the token endpoint.
type entraError struct {
	Error         string `json:"error"`
	Codes         []int  `json:"error_codes"`
	TraceID       string `json:"trace_id"`
	CorrelationID string `json:"correlation_id"`
}

// aadstsCode returns the first AADSTS code of an Entra error response, read
// from the JSON body's error_codes.
func aadstsCode(resp *http.Response) (entraError, bool) {
	var e entraError
	if resp == nil {
		return e, false
	}
	body, err := runtime.Payload(resp)
	if err != nil || json.Unmarshal(body, &e) != nil || len(e.Codes) == 0 {
		return e, false
	}
	return e, true
}

// SignIn explains a failed sign-in. The Problem has no vault or
// secret: the caller adds what could not be read.
func (d Diagnoser) SignIn(err error) Problem {
	var afe *azidentity.AuthenticationFailedError
	if !errors.As(err, &afe) {
		return d.Transport(err, hostOf(d.Identity.AuthorityHost))
	}
	resp := afe.RawResponse
	if resp == nil {
		// No HTTP response: the credential could not even ask, e.g. the
		// token file is missing. Its message names the cause, no secret.
		return Problem{Cause: "sign-in failed: " + firstLine(afe.Error()),
			Fix: fmt.Sprintf("check that %s (%s) is the projected service-account token of volume %s", spec.EnvFederatedTokenFile, d.Identity.TokenFile, spec.TokenVolumeName)}
	}
	ee, ok := aadstsCode(resp)
	if !ok {
		return Problem{Cause: fmt.Sprintf("sign-in failed: Entra ID answered HTTP %d to %s %s without an AADSTS code", resp.StatusCode, requestMethod(resp), requestURL(resp)),
			Fix: "check " + spec.EnvAuthorityHost + " (" + d.Identity.AuthorityHost + ") and any proxy between the pod and Entra ID"}
	}
	code := ee.Codes[0]
	trace := ""
	if ee.TraceID != "" {
		trace = fmt.Sprintf(" (trace ID %s, correlation ID %s)", ee.TraceID, ee.CorrelationID)
	}
	claims := "token claims unavailable"
	var tc TokenClaims
	if d.Claims != nil {
		var cerr error
		if tc, cerr = d.Claims(); cerr == nil {
			claims = "the token has " + tc.String()
		} else {
			claims = "the token's claims could not be read: " + cerr.Error()
		}
	}
	fedCred := func(issuer, subject string) string {
		return fmt.Sprintf("az identity federated-credential create --identity-name <identity> --resource-group <group> --name kvinject --issuer %q --subject %q --audiences %s",
			issuer, subject, spec.TokenAudience)
	}
	p := Problem{}
	switch code {
	case 700211:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS700211: no federated credential of client id %s trusts the token's issuer; %s%s", d.Identity.ClientID, claims, trace)
		p.Fix = fmt.Sprintf("add a federated credential whose issuer is exactly the token's iss (case and trailing slash matter): %s", fedCred(tc.Issuer, tc.Subject))
	case 700212:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS700212: no federated credential of client id %s accepts the token's audience; %s%s", d.Identity.ClientID, claims, trace)
		p.Fix = fmt.Sprintf("the federated credential's audience must be %s, the audience kvinject requests for the projected token", spec.TokenAudience)
	case 700213:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS700213: no federated credential of client id %s matches the token's subject; %s%s", d.Identity.ClientID, claims, trace)
		p.Fix = fmt.Sprintf("the federated credential's subject must be exactly the pod's system:serviceaccount:<namespace>:<serviceaccount>: %s", fedCred(tc.Issuer, tc.Subject))
	case 700016:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS700016: Entra ID has no application with client id %s in tenant %s%s", d.Identity.ClientID, d.Identity.TenantID, trace)
		p.Fix = fmt.Sprintf("check the ServiceAccount annotation %s or the pod annotation %s (the client id of the managed identity or app registration), and the tenant id",
			spec.SAAnnotationClientID, spec.AnnotationClientID)
	case 700024:
		now := time.Now
		if d.Now != nil {
			now = d.Now
		}
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS700024: the service-account token is not within its valid time range (agent clock %s; %s)%s",
			now().UTC().Format(time.RFC3339), claims, trace)
		p.Fix = "check the node's clock (NTP) for skew; if the token expired, the kubelet did not refresh it: delete the pod so it gets a fresh token"
	case 50166:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS50166: Entra ID could not fetch the token issuer's OIDC discovery document or JWKS; %s%s", claims, trace)
		p.Fix = fmt.Sprintf("%s/.well-known/openid-configuration and the jwks_uri it names must be public: reachable from the internet over HTTPS with a publicly trusted certificate and no authentication, "+
			"e.g. a static website holding the discovery document and JWKS, as in the reference setup", strings.TrimSuffix(tc.Issuer, "/"))
	case 7000272, 700027:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS%d: the token's signature does not verify with the issuer's published keys; %s%s", code, claims, trace)
		p.Fix = "publish the cluster's current service-account signing keys in the issuer's JWKS (after a key rotation, upload the new JWKS)"
	case 90002:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS90002: tenant %s does not exist%s", d.Identity.TenantID, trace)
		p.Fix = fmt.Sprintf("check the tenant id: pod annotation %s, ServiceAccount annotation %s or the webhook's --tenant-id", spec.AnnotationTenantID, spec.SAAnnotationTenantID)
	default:
		p.Cause = fmt.Sprintf("sign-in failed: AADSTS%d (%s, HTTP %d)%s", code, ee.Error, resp.StatusCode, trace)
		p.Fix = fmt.Sprintf("see https://login.microsoftonline.com/error?code=%d", code)
	}
	return p
}

// kvError is Key Vault's JSON error body.
type kvError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// resourceRE finds the Resource line of Key Vault's 403 message: the
// vault's (or secret's) ARM resource id, which is the role scope to print.
var resourceRE = regexp.MustCompile(`(?i)Resource:\s*'(/subscriptions/[^']+)'`)

// Read explains why one secret could not be read. at, when not nil, tells
// how many tries the request took and what came back last (for timeouts).
func (d Diagnoser) Read(id spec.SecretID, err error, at *Attempts) Problem {
	p := Problem{Vault: id.Vault, Secret: Label(id)}
	var re *azcore.ResponseError
	var afe *azidentity.AuthenticationFailedError
	var ce *CacheSecretError
	switch {
	case errors.As(err, &ce):
		// The cache diagnosed the read it made for the pod.
		p.Cause, p.Fix = ce.Answer.Cause+" (the kvinject cache's answer)", ce.Answer.Fix
		return p
	case errors.As(err, &afe):
		ap := d.SignIn(err)
		p.Cause, p.Fix = ap.Cause, ap.Fix
		return p
	case errors.As(err, &re):
		return d.response(p, id, re, at)
	case errors.Is(err, context.DeadlineExceeded):
		p.Cause = fmt.Sprintf("gave up when %s of %v ran out%s", d.timeLimit(), d.Timeout, at.summary())
		p.Fix = "if Key Vault is throttling (429) or unavailable, the kubelet retries the init container; " + d.raiseOr("reduce concurrent pod starts") + "; " +
			"if the vault is unreachable, check egress to " + hostOf(id.Vault) + ":443 (network policy, proxy, firewall)"
		return p
	case errors.Is(err, context.Canceled):
		p.Cause = "interrupted (the agent was asked to stop)"
		return p
	}
	tp := d.Transport(err, hostOf(id.Vault))
	p.Cause, p.Fix = tp.Cause, tp.Fix
	return p
}

func (d Diagnoser) response(p Problem, id spec.SecretID, re *azcore.ResponseError, at *Attempts) Problem {
	var body kvError
	inner := ""
	msg := ""
	if re.RawResponse != nil {
		if b, err := runtime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil {
			msg = body.Error.Message
			if body.Error.InnerError != nil {
				inner = body.Error.InnerError.Code
			}
		}
	}
	code := re.ErrorCode
	if code == "" {
		code = body.Error.Code
	}
	codes := code
	if inner != "" {
		codes += " " + inner
	}
	status := fmt.Sprintf("%d %s", re.StatusCode, strings.TrimSpace(codes))
	switch {
	case re.StatusCode == http.StatusForbidden && (inner == "ForbiddenByRbac" || code == "ForbiddenByRbac"):
		// The resource id names the subscription: the log has it, the
		// termination message a command that finds it.
		scope := fmt.Sprintf("$(az keyvault show --name %s --query id -o tsv)", vaultName(id.Vault))
		if m := resourceRE.FindStringSubmatch(msg); m != nil {
			vaultID := m[1]
			if i := strings.Index(strings.ToLower(vaultID), "/secrets/"); i >= 0 {
				vaultID = vaultID[:i]
			}
			p.Detail = "the vault's resource id is " + vaultID
		}
		p.Cause = fmt.Sprintf("Key Vault refused to read the secret (%s): client id %s has no role that allows Microsoft.KeyVault/vaults/secrets/getSecret/action", status, d.Identity.ClientID)
		p.Fix = fmt.Sprintf("assign the role %q to client id %s at scope %s (the vault, or one secret below it): az role assignment create --role %q --assignee %s --scope %s; role assignments take a few minutes to apply",
			RoleSecretsUser, d.Identity.ClientID, scope, RoleSecretsUser, d.Identity.ClientID, scope)
	case re.StatusCode == http.StatusForbidden && (inner == "ForbiddenByPolicy" || code == "ForbiddenByPolicy"):
		p.Cause = fmt.Sprintf("Key Vault refused to read the secret (%s): the vault uses access policies and none gives client id %s the secret Get permission", status, d.Identity.ClientID)
		p.Fix = fmt.Sprintf("az keyvault set-policy --name %s --spn %s --secret-permissions get, or switch the vault to Azure RBAC and assign %q", vaultName(id.Vault), d.Identity.ClientID, RoleSecretsUser)
	case re.StatusCode == http.StatusForbidden && (strings.Contains(inner+code, "Firewall") || strings.Contains(inner+code, "Connection")):
		p.Cause = fmt.Sprintf("Key Vault's network rules refused the request (%s)", status)
		p.Fix = "allow the cluster's egress address in the vault's networking settings, or reach it through a private endpoint"
	case re.StatusCode == http.StatusForbidden && (inner == "SecretDisabled" || code == "SecretDisabled"):
		p.Cause = fmt.Sprintf("the secret version is disabled (%s)", status)
		p.Fix = fmt.Sprintf("enable it (az keyvault secret set-attributes --vault-name %s --name %s --enabled true) or reference an enabled version", vaultName(id.Vault), id.Name)
	case re.StatusCode == http.StatusForbidden:
		p.Cause = fmt.Sprintf("Key Vault refused to read the secret (%s) for client id %s", status, d.Identity.ClientID)
		p.Fix = fmt.Sprintf("assign the role %q to client id %s on the vault (az role assignment create --role %q --assignee %s --scope $(az keyvault show --name %s --query id -o tsv))",
			RoleSecretsUser, d.Identity.ClientID, RoleSecretsUser, d.Identity.ClientID, vaultName(id.Vault))
	case re.StatusCode == http.StatusNotFound:
		if id.Version == "" {
			p.Cause = fmt.Sprintf("no secret named %q in the vault (%s)", id.Name, status)
			p.Fix = fmt.Sprintf("check the name (az keyvault secret list --vault-name %s --query [].name) and the vault; a deleted secret can be recovered with az keyvault secret recover", vaultName(id.Vault))
		} else {
			p.Cause = fmt.Sprintf("secret %q has no version %s in the vault (%s)", id.Name, id.Version, status)
			p.Fix = fmt.Sprintf("check the versions (az keyvault secret list-versions --vault-name %s --name %s --query [].id), or drop the version to read the latest", vaultName(id.Vault), id.Name)
		}
	case re.StatusCode == http.StatusUnauthorized:
		p.Cause = fmt.Sprintf("Key Vault did not accept the access token (%s)", status)
		p.Fix = fmt.Sprintf("the vault must be in tenant %s (%s); a vault in another tenant cannot be read with this identity", d.Identity.TenantID, spec.EnvTenantID)
	case re.StatusCode == http.StatusTooManyRequests:
		p.Cause = fmt.Sprintf("Key Vault kept throttling the requests (%s)%s", status, at.summary())
		p.Fix = "the vault's request limit was reached: spread pod starts, or fetch fewer secrets per vault; the kubelet retries the init container"
	case re.StatusCode >= 500:
		p.Cause = fmt.Sprintf("Key Vault failed (%s)%s", status, at.summary())
		p.Fix = "a transient service problem: the kubelet retries the init container; check https://status.azure.com if it persists"
	default:
		p.Cause = fmt.Sprintf("Key Vault refused the request (%s)", status)
		p.Fix = "check the secret reference"
	}
	return p
}

// Transport explains errors without an HTTP response. Transport
// errors name hosts and system calls, never response bodies; JSON decoding
// errors are not quoted because they can quote a value.
func (d Diagnoser) Transport(err error, host string) Problem {
	var dnsErr *net.DNSError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se), errors.As(err, &te):
		return Problem{Cause: "the response from " + host + " was not the JSON expected", Fix: "check that no proxy rewrites responses"}
	case errors.As(err, &dnsErr):
		return Problem{Cause: fmt.Sprintf("cannot resolve %s (%s)", dnsErr.Name, dnsErr.Err),
			Fix: "check the vault name or the authority host, and the pod's DNS"}
	case errors.Is(err, context.DeadlineExceeded):
		fix := "check egress to " + host + ":443 (network policy, proxy, firewall)"
		if d.RaiseTimeout != "" {
			fix += ", or " + d.RaiseTimeout
		}
		return Problem{Cause: fmt.Sprintf("gave up when %s of %v ran out while talking to %s", d.timeLimit(), d.Timeout, host), Fix: fix}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return Problem{Cause: fmt.Sprintf("cannot reach %s: %v", host, ue.Err),
			Fix: "check egress to " + host + ":443, HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE"}
	}
	return Problem{Cause: fmt.Sprintf("request to %s failed: %v", host, firstLine(err.Error())),
		Fix: "check egress to " + host + ":443, HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE"}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

func requestMethod(resp *http.Response) string {
	if resp.Request == nil {
		return ""
	}
	return resp.Request.Method
}

func requestURL(resp *http.Response) string {
	if resp.Request == nil || resp.Request.URL == nil {
		return ""
	}
	u := *resp.Request.URL
	u.RawQuery = ""
	return u.String()
}

// Attempts records what each try of one request got, so that a timeout can
// say what it was waiting for (WithAttempts).
type Attempts struct {
	n          int
	lastStatus int
	lastCode   string
}

func (a *Attempts) summary() string {
	if a == nil || a.n == 0 {
		return ""
	}
	s := fmt.Sprintf(" after %d attempt", a.n)
	if a.n > 1 {
		s += "s"
	}
	if a.lastStatus != 0 {
		s += "; last answer " + strconv.Itoa(a.lastStatus)
		if a.lastCode != "" {
			s += " " + a.lastCode
		}
	}
	return s
}
