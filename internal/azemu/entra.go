package azemu

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

func (e *Emulator) serveEntra(w http.ResponseWriter, r *http.Request, rt route) {
	switch rt.class {
	case ClassInstanceDiscovery:
		e.serveInstanceDiscovery(w, r, rt)
	case ClassOIDCMetadata:
		e.serveOIDCMetadata(w, r)
	case ClassToken:
		e.serveToken(w, r, rt)
	default:
		http.NotFound(w, r)
	}
}

// serveInstanceDiscovery answers MSAL's authority validation. Only the
// requested cloud's aliases are listed, so MSAL never picks a host the
// proxy would refuse.
func (e *Emulator) serveInstanceDiscovery(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	tenant := "common"
	if ae, err := url.Parse(r.URL.Query().Get("authorization_endpoint")); err == nil {
		if p := strings.Split(strings.Trim(ae.Path, "/"), "/"); len(p) > 0 && p[0] != "" {
			tenant = p[0]
		}
	}
	logOf(r).tenant = tenant
	host := hostKey(r.Host)
	aliases := []string{host}
	cacheHost := host
	switch rt.cloud {
	case CloudPublic:
		if host == mustCloud(CloudPublic).loginHost {
			aliases = []string{"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"}
			cacheHost = "login.windows.net"
		}
	case CloudChina:
		aliases = []string{"login.partner.microsoftonline.cn", "login.chinacloudapi.cn"}
		cacheHost = "login.partner.microsoftonline.cn"
	case CloudUSGovernment:
		aliases = []string{"login.microsoftonline.us", "login.usgovcloudapi.net"}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + host + "/" + tenant + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": host,
			"preferred_cache":   cacheHost,
			"aliases":           aliases,
		}},
	})
}

func tenantSegment(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	return p[0]
}

func (e *Emulator) knownTenant(t string) bool {
	e.state.mu.RLock()
	defer e.state.mu.RUnlock()
	_, ok := e.state.tenants[strings.ToLower(t)]
	return ok
}

func (e *Emulator) tenantNotFound(w http.ResponseWriter, r *http.Request, tenant string) {
	e.writeAADError(w, r, http.StatusBadRequest, "invalid_tenant", 90002,
		fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenant))
}

// serveOIDCMetadata serves the tenant's v2.0 discovery document. MSAL
// requires issuer to have the authority's scheme and host.
func (e *Emulator) serveOIDCMetadata(w http.ResponseWriter, r *http.Request) {
	tenant := tenantSegment(r)
	logOf(r).tenant = tenant
	if !e.knownTenant(tenant) {
		e.tenantNotFound(w, r, tenant)
		return
	}
	base := "https://" + r.Host + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              "https://" + r.Host + "/" + tenant + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
	})
}

// serveToken is the client-credentials grant with a federated client
// assertion, checked in the order Entra ID reports failures.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request, rt route) {
	rl := logOf(r)
	tenant := tenantSegment(r)
	rl.tenant = tenant
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !e.knownTenant(tenant) {
		e.tenantNotFound(w, r, tenant)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") == "" {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	if f.Get("grant_type") != grantClientCredentials {
		e.writeAADError(w, r, http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+f.Get("grant_type")+"'.")
		return
	}
	clientID := strings.ToLower(f.Get("client_id"))
	rl.clientID = clientID
	if clientID == "" {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	e.state.mu.RLock()
	id, ok := e.state.identities[clientID]
	e.state.mu.RUnlock()
	if !ok || !strings.EqualFold(id.Tenant, tenant) {
		e.writeAADError(w, r, http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", f.Get("client_id"), tenant))
		return
	}
	resource, ok := resourceFromScope(f.Get("scope"))
	if !ok {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_scope", 1002012,
			fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", f.Get("scope")))
		return
	}
	if !knownResource(resource) {
		e.writeAADError(w, r, http.StatusBadRequest, "invalid_resource", 500011,
			fmt.Sprintf("The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.", resource, tenant))
		return
	}
	assertion := f.Get("client_assertion")
	if assertion == "" || f.Get("client_assertion_type") != assertionTypeJWTBearer {
		e.writeAADError(w, r, http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	if ae := e.checkAssertion(r.Context(), id, strings.TrimSpace(assertion)); ae != nil {
		e.writeAADError(w, r, ae.status, ae.err, ae.code, ae.desc)
		return
	}
	lifetime := e.opts.TokenLifetime
	tok, err := e.mintAccessToken(strings.ToLower(tenant), clientID, resource, lifetime)
	if err != nil {
		e.writeAADError(w, r, http.StatusInternalServerError, "server_error", 90033, "A transient error has occurred. Please try again.")
		return
	}
	e.stats.tokens.Add(1)
	if j, err := parseJWT(strings.TrimSpace(assertion)); err == nil { // checked above
		e.stats.signIn(clientID, j.claims.Sub)
	}
	secs := int(lifetime / time.Second)
	w.Header().Set("Cache-Control", "no-store, no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     secs,
		"ext_expires_in": secs,
		"access_token":   tok,
	})
}

// resourceFromScope returns the resource of the first "/.default" scope.
func resourceFromScope(scope string) (string, bool) {
	for _, s := range strings.Fields(scope) {
		if res, ok := strings.CutSuffix(s, "/.default"); ok && res != "" {
			return res, true
		}
	}
	return "", false
}

// knownResource accepts the Key Vault resources of every cloud, the only
// resource servers the emulator runs.
func knownResource(res string) bool {
	res = strings.TrimSuffix(res, "/")
	for _, n := range cloudNames() {
		if res == mustCloud(n).resource {
			return true
		}
	}
	return false
}

// aadError is an Entra ID error ready to write.
type aadError struct {
	status int
	err    string
	code   int
	desc   string
}

// writeAADError writes the Entra ID error body: the description ends with
// "\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ..." and the
// correlation id echoes the client's client-request-id, as Entra does.
func (e *Emulator) writeAADError(w http.ResponseWriter, r *http.Request, status int, errName string, code int, desc string) {
	logOf(r).aadsts = fmt.Sprintf("AADSTS%d", code)
	trace := newGUID()
	corr := r.Header.Get("client-request-id")
	if !guidRE.MatchString(corr) {
		corr = newGUID()
	}
	ts := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	body := struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorCodes       []int  `json:"error_codes"`
		Timestamp        string `json:"timestamp"`
		TraceID          string `json:"trace_id"`
		CorrelationID    string `json:"correlation_id"`
		ErrorURI         string `json:"error_uri"`
	}{
		Error:            errName,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s", code, desc, trace, corr, ts),
		ErrorCodes:       []int{code},
		Timestamp:        ts,
		TraceID:          trace,
		CorrelationID:    corr,
		ErrorURI:         fmt.Sprintf("https://%s/error?code=%d", hostKey(r.Host), code),
	}
	w.Header().Set("x-ms-request-id", trace)
	w.Header().Set("client-request-id", corr)
	w.Header().Set("Cache-Control", "no-store, no-cache")
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encoding error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
