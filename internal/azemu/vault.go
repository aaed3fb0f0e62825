package azemu

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// kvServiceVersion is reported in x-ms-keyvault-service-version.
const kvServiceVersion = "1.9.2567.1"

// secretAttributes is the attributes object of a secret bundle; times are
// integer Unix seconds, as Key Vault sends them.
type secretAttributes struct {
	Enabled         bool   `json:"enabled"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

type secretBundle struct {
	Value       *string           `json:"value,omitempty"`
	ID          string            `json:"id"`
	ContentType string            `json:"contentType,omitempty"`
	Attributes  secretAttributes  `json:"attributes"`
	Tags        map[string]string `json:"tags,omitempty"`
	// Managed and Kid mark the secret behind a certificate object, as Key
	// Vault sends them: managed true, and the certificate's key.
	Managed bool   `json:"managed,omitempty"`
	Kid     string `json:"kid,omitempty"`
}

type secretList struct {
	Value    []secretBundle `json:"value"`
	NextLink *string        `json:"nextLink"`
}

func attrsOf(v *versionState) secretAttributes {
	return secretAttributes{
		Enabled: enabled(v.SecretVersion), NotBefore: v.NotBefore, Expires: v.Expires,
		Created: v.created, Updated: v.updated,
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90,
	}
}

func bundleOf(base, name string, v *versionState, withValue bool) secretBundle {
	b := secretBundle{
		ID:          base + "/secrets/" + name + "/" + v.Version,
		ContentType: v.ContentType,
		Attributes:  attrsOf(v),
		Tags:        v.Tags,
		Managed:     v.Certificate,
	}
	if v.Certificate {
		b.Kid = base + "/keys/" + name + "/" + v.Version
	}
	if withValue {
		val := v.Value
		b.Value = &val
	}
	return b
}

// writeKVError writes {"error":{"code","message","innererror":{"code"}}}.
func writeKVError(w http.ResponseWriter, status int, code, msg, inner string) {
	type innerErr struct {
		Code string `json:"code"`
	}
	body := struct {
		Error struct {
			Code       string    `json:"code"`
			Message    string    `json:"message"`
			InnerError *innerErr `json:"innererror,omitempty"`
		} `json:"error"`
	}{}
	body.Error.Code, body.Error.Message = code, msg
	if inner != "" {
		body.Error.InnerError = &innerErr{Code: inner}
	}
	w.Header().Set("x-ms-keyvault-service-version", kvServiceVersion)
	w.Header().Set("x-ms-request-id", newGUID())
	writeJSON(w, status, body)
}

// challenge answers 401 with the header the SDK's challenge policy parses:
// the tenant is the path of authorization, the scope is resource.
func challenge(w http.ResponseWriter, c cloudInfo, tenant, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, c.challengeAS, tenant, c.resource))
	writeKVError(w, http.StatusUnauthorized, "Unauthorized", msg, "")
}

func (e *Emulator) serveVault(w http.ResponseWriter, r *http.Request, rt route) {
	rl := logOf(r)
	e.state.mu.RLock()
	v, ok := e.state.vaults[rt.vault]
	var tenant, vname string
	if ok {
		tenant, vname = v.tenant, v.name
	}
	e.state.mu.RUnlock()
	if !ok || v.cloud != rt.cloud {
		http.NotFound(w, r)
		return
	}
	rl.kvCode = ""
	ci := mustCloud(rt.cloud)
	q := r.URL.Query()
	if q.Get("api-version") == "" {
		rl.kvCode = "BadParameter"
		writeKVError(w, http.StatusBadRequest, "BadParameter", "The 'api-version' query parameter is missing or invalid.", "")
		return
	}
	authz := r.Header.Get("Authorization")
	tok, isBearer := strings.CutPrefix(authz, "Bearer ")
	if authz == "" || !isBearer || tok == "" {
		rl.kvCode = "Unauthorized"
		challenge(w, ci, tenant, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	claims, err := e.verifyAccessToken(tok)
	switch {
	case errors.Is(err, errTokenExpired):
		rl.kvCode = "Unauthorized"
		rl.clientID, rl.tenant = claims.AppID, claims.TID
		challenge(w, ci, tenant, "AKV10013: Token validation failed: the token is expired.")
		return
	case err != nil:
		rl.kvCode = "Unauthorized"
		challenge(w, ci, tenant, "AKV10022: Invalid token: signature validation failed.")
		return
	}
	rl.clientID, rl.tenant = claims.AppID, claims.TID
	if claims.Aud != ci.resource {
		rl.kvCode = "Unauthorized"
		challenge(w, ci, tenant, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", ci.resource, claims.Aud))
		return
	}
	if claims.TID != tenant {
		rl.kvCode = "Unauthorized"
		challenge(w, ci, tenant, fmt.Sprintf("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/%s/, found https://sts.windows.net/%s/.", tenant, claims.TID))
		return
	}

	p := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(p) > 1 && p[len(p)-1] == "" {
		p = p[:len(p)-1]
	}
	base := "https://" + r.Host
	var name, version string
	if len(p) >= 2 {
		name = p[1]
		rl.secret = name
	}
	if len(p) == 3 && p[2] != "versions" {
		version = strings.ToLower(p[2])
	}
	action := actionGetSecret
	switch {
	case r.Method == http.MethodPut && len(p) == 2:
		action = actionSetSecret
	case r.Method != http.MethodGet || len(p) > 3:
		rl.kvCode = "BadParameter"
		writeKVError(w, http.StatusMethodNotAllowed, "BadParameter", "The requested operation is not supported by the emulator.", "")
		return
	case len(p) == 1 || rt.class == ClassKVVersions:
		action = actionReadMetadata
	}
	resource := "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/azemu/providers/microsoft.keyvault/vaults/" + vname + "/secrets"
	if name != "" {
		resource += "/" + name
	}
	e.state.mu.RLock()
	allowed := v.allowed(claims.AppID, action)
	e.state.mu.RUnlock()
	if !allowed {
		rl.kvCode = "ForbiddenByRbac"
		msg := "Caller is not authorized to perform action on resource.\r\n" +
			"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
			fmt.Sprintf("Caller: appid=%s;oid=%s;iss=https://sts.windows.net/%s/\r\n", claims.AppID, claims.OID, claims.TID) +
			fmt.Sprintf("Action: '%s'\r\n", action) +
			fmt.Sprintf("Resource: '%s'\r\n", resource) +
			"Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n" +
			fmt.Sprintf("Vault: %s;location=westeurope\r\n", vname)
		writeKVError(w, http.StatusForbidden, "Forbidden", msg, "ForbiddenByRbac")
		return
	}

	switch {
	case action == actionSetSecret:
		e.kvSet(w, r, rt.vault, name, base)
	case len(p) == 1:
		e.kvList(w, r, rt.vault, base)
	case rt.class == ClassKVVersions:
		e.kvVersions(w, r, rt.vault, name, base)
	default:
		e.kvGet(w, r, rt.vault, name, version, base)
	}
}

func notFound(w http.ResponseWriter, r *http.Request, what string) {
	logOf(r).kvCode = "SecretNotFound"
	writeKVError(w, http.StatusNotFound, "SecretNotFound",
		fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", what), "")
}

func (e *Emulator) kvGet(w http.ResponseWriter, r *http.Request, vault, name, version, base string) {
	e.state.mu.RLock()
	var b secretBundle
	found, on := false, false
	if s := e.state.vaults[vault].secrets[strings.ToLower(name)]; s != nil && len(s.versions) > 0 {
		vs := s.versions[len(s.versions)-1]
		if version != "" {
			vs = nil
			for _, x := range s.versions {
				if x.Version == version {
					vs = x
				}
			}
		}
		if vs != nil {
			found, on = true, enabled(vs.SecretVersion)
			b = bundleOf(base, s.name, vs, true)
		}
	}
	e.state.mu.RUnlock()
	switch {
	case !found && version != "":
		notFound(w, r, name+"/"+version)
	case !found:
		notFound(w, r, name)
	case !on:
		logOf(r).kvCode = "SecretDisabled"
		writeKVError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
	default:
		w.Header().Set("x-ms-keyvault-service-version", kvServiceVersion)
		writeJSON(w, http.StatusOK, b)
	}
}

// page parses maxresults and $skiptoken. The skip token is opaque to
// clients (base64 of an offset), as Key Vault's is.
func (e *Emulator) page(w http.ResponseWriter, r *http.Request) (offset, size int, ok bool) {
	q := r.URL.Query()
	size = e.opts.PageSize
	if m := q.Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 25 {
			logOf(r).kvCode = "BadParameter"
			writeKVError(w, http.StatusBadRequest, "BadParameter", "Invalid value for maxresults: it must be an integer from 1 to 25.", "")
			return 0, 0, false
		}
		size = n
	}
	if t := q.Get("$skiptoken"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			logOf(r).kvCode = "BadParameter"
			writeKVError(w, http.StatusBadRequest, "BadParameter", "The skip token is not valid.", "")
			return 0, 0, false
		}
		offset = n
	}
	return offset, size, true
}

func writePage(w http.ResponseWriter, r *http.Request, items []secretBundle, offset, size int) {
	out := secretList{Value: []secretBundle{}}
	if offset < len(items) {
		end := min(offset+size, len(items))
		out.Value = items[offset:end]
		if end < len(items) {
			q := url.Values{}
			q.Set("api-version", r.URL.Query().Get("api-version"))
			q.Set("$skiptoken", base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end))))
			if m := r.URL.Query().Get("maxresults"); m != "" {
				q.Set("maxresults", m)
			}
			link := "https://" + r.Host + r.URL.Path + "?" + q.Encode()
			out.NextLink = &link
		}
	}
	w.Header().Set("x-ms-keyvault-service-version", kvServiceVersion)
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) kvList(w http.ResponseWriter, r *http.Request, vault, base string) {
	offset, size, ok := e.page(w, r)
	if !ok {
		return
	}
	e.state.mu.RLock()
	var items []secretBundle
	for _, s := range e.state.vaults[vault].secrets {
		if len(s.versions) == 0 {
			continue
		}
		latest := s.versions[len(s.versions)-1]
		items = append(items, secretBundle{
			ID: base + "/secrets/" + s.name, ContentType: latest.ContentType,
			Attributes: attrsOf(latest), Tags: latest.Tags, Managed: latest.Certificate,
		})
	}
	e.state.mu.RUnlock()
	slices.SortFunc(items, func(a, b secretBundle) int { return strings.Compare(strings.ToLower(a.ID), strings.ToLower(b.ID)) })
	writePage(w, r, items, offset, size)
}

func (e *Emulator) kvVersions(w http.ResponseWriter, r *http.Request, vault, name, base string) {
	offset, size, ok := e.page(w, r)
	if !ok {
		return
	}
	e.state.mu.RLock()
	s := e.state.vaults[vault].secrets[strings.ToLower(name)]
	var items []secretBundle
	if s != nil {
		for _, vs := range s.versions {
			items = append(items, bundleOf(base, s.name, vs, false))
		}
	}
	e.state.mu.RUnlock()
	if s == nil {
		notFound(w, r, name)
		return
	}
	writePage(w, r, items, offset, size)
}

func (e *Emulator) kvSet(w http.ResponseWriter, r *http.Request, vault, name, base string) {
	var body struct {
		Value       *string           `json:"value"`
		ContentType string            `json:"contentType"`
		Tags        map[string]string `json:"tags"`
		Attributes  *struct {
			Enabled *bool  `json:"enabled"`
			NBF     *int64 `json:"nbf"`
			Exp     *int64 `json:"exp"`
		} `json:"attributes"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(b, &body)
	}
	if err != nil || body.Value == nil || !secretRE.MatchString(name) {
		logOf(r).kvCode = "BadParameter"
		writeKVError(w, http.StatusBadRequest, "BadParameter", "The request body must be a secret with a value.", "")
		return
	}
	sv := SecretVersion{Value: *body.Value, ContentType: body.ContentType, Tags: body.Tags}
	if a := body.Attributes; a != nil {
		sv.Enabled, sv.NotBefore, sv.Expires = a.Enabled, a.NBF, a.Exp
	}
	ver, err := e.AddSecretVersion(vault, name, sv)
	if err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "The secret could not be set.", "")
		return
	}
	e.kvGetAny(w, vault, name, ver, base)
}

// kvGetAny writes a version's bundle even when disabled (set returns it).
func (e *Emulator) kvGetAny(w http.ResponseWriter, vault, name, version, base string) {
	e.state.mu.RLock()
	defer e.state.mu.RUnlock()
	s := e.state.vaults[vault].secrets[strings.ToLower(name)]
	for _, vs := range s.versions {
		if vs.Version == version {
			w.Header().Set("x-ms-keyvault-service-version", kvServiceVersion)
			writeJSON(w, http.StatusOK, bundleOf(base, s.name, vs, true))
			return
		}
	}
}
