package azemu

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// route is where a request goes, decided from the host and path before
// anything else so faults and stats can be keyed by class.
type route struct {
	class Class
	login bool   // Entra ID endpoint
	vault string // vault name (lower case) for Key Vault endpoints
	cloud string
}

// reqLog collects the loggable facts of a request. It deliberately has no
// field that could hold a secret value, an assertion or a token.
type reqLog struct {
	tenant, clientID, vault, secret, aadsts, kvCode string
}

type reqLogKey struct{}

func logOf(r *http.Request) *reqLog {
	if l, ok := r.Context().Value(reqLogKey{}).(*reqLog); ok {
		return l
	}
	return &reqLog{}
}

func (e *Emulator) route(r *http.Request, ec *emuConn) route {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var rt route
	if ec != nil && ec.target != "" {
		kind, vault, cloud := classifyHost(host)
		if hostKey(host) != ec.target {
			return route{class: ClassOther}
		}
		rt.cloud = cloud
		switch kind {
		case hostLogin:
			rt.login = true
		case hostVault:
			rt.vault = vault
		default:
			return route{class: ClassOther}
		}
	} else {
		// Direct mode: one port serves both; the path tells them apart.
		rt.cloud = CloudPublic
		if r.URL.Path == "/secrets" || strings.HasPrefix(r.URL.Path, "/secrets/") {
			if ec != nil {
				rt.vault = strings.ToLower(ec.vault)
			}
			if rt.vault == "" {
				rt.vault = e.soleVault()
			}
			if rt.vault == "" {
				return route{class: ClassOther}
			}
			e.state.mu.RLock()
			if v, ok := e.state.vaults[rt.vault]; ok {
				rt.cloud = v.cloud
			}
			e.state.mu.RUnlock()
		} else {
			rt.login = true
		}
	}
	if rt.login {
		rt.class = entraClass(r)
		return rt
	}
	rt.class = vaultClass(r)
	return rt
}

func (e *Emulator) soleVault() string {
	e.state.mu.RLock()
	defer e.state.mu.RUnlock()
	if len(e.state.vaults) != 1 {
		return ""
	}
	for k := range e.state.vaults {
		return k
	}
	return ""
}

func entraClass(r *http.Request) Class {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(p) == 3 && p[0] == "common" && p[1] == "discovery" && p[2] == "instance":
		return ClassInstanceDiscovery
	case len(p) == 4 && p[1] == "v2.0" && p[2] == ".well-known" && p[3] == "openid-configuration":
		return ClassOIDCMetadata
	case len(p) == 4 && p[1] == "oauth2" && p[2] == "v2.0" && p[3] == "token":
		return ClassToken
	}
	return ClassOther
}

func vaultClass(r *http.Request) Class {
	if r.Header.Get("Authorization") == "" {
		return ClassKVChallenge
	}
	p := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(p) > 0 && p[len(p)-1] == "" && len(p) > 1 {
		p = p[:len(p)-1] // trailing slash on "get latest"
	}
	switch {
	case len(p) == 1:
		return ClassKVList
	case len(p) == 3 && p[2] == "versions":
		return ClassKVVersions
	case r.Method == http.MethodPut && len(p) == 2:
		return ClassKVSet
	}
	return ClassKVGet
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// handler serves Entra ID and Key Vault for both proxy and direct mode.
func (e *Emulator) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ec, _ := r.Context().Value(connKey{}).(*emuConn)
		rt := e.route(r, ec)
		rl := &reqLog{vault: rt.vault}
		r = r.WithContext(context.WithValue(r.Context(), reqLogKey{}, rl))
		cw := &countingWriter{ResponseWriter: w}
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		var fault FaultKind
		defer func() {
			e.stats.record(rt.class, cw.status, body.n, cw.n)
			attrs := []any{
				"class", string(rt.class), "method", r.Method, "path", r.URL.Path,
				"status", cw.status, "duration", time.Since(start).Round(time.Microsecond),
			}
			for _, kv := range [][2]string{{"tenant", rl.tenant}, {"clientID", rl.clientID}, {"vault", rl.vault}, {"secret", rl.secret}, {"aadsts", rl.aadsts}, {"kvError", rl.kvCode}, {"fault", string(fault)}} {
				if kv[1] != "" {
					attrs = append(attrs, kv[0], kv[1])
				}
			}
			e.log.Info("request", attrs...)
		}()

		if d := e.knobs().RequestLatency; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f, ok := e.pickFault(rt.class); ok {
			fault = f.Kind
			e.stats.fault(f.Kind)
			e.writeFault(cw, r, ec, rt, f)
			return
		}
		switch {
		case rt.class == ClassOther:
			http.NotFound(cw, r)
		case rt.login:
			e.serveEntra(cw, r, rt)
		default:
			e.serveVault(cw, r, rt)
		}
	})
}

func (e *Emulator) writeFault(w *countingWriter, r *http.Request, ec *emuConn, rt route, f Fault) {
	if f.Kind == FaultReset {
		if ec != nil {
			ec.reset()
		}
		// Stop the handler without a response; net/http treats this
		// sentinel panic as a deliberate abort and logs nothing.
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
	}
	status := http.StatusTooManyRequests
	if f.Kind == FaultUnavailable {
		status = http.StatusServiceUnavailable
	}
	if rt.login {
		code, desc := 50196, "The server terminated an operation because it encountered a client request loop. Please contact your app vendor."
		errName := "temporarily_unavailable"
		if status == http.StatusServiceUnavailable {
			code, desc = 90033, "A transient error has occurred. Please try again."
		}
		e.writeAADError(w, r, status, errName, code, desc)
		return
	}
	if status == http.StatusTooManyRequests {
		writeKVError(w, status, "Throttled", "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached", "")
		return
	}
	writeKVError(w, status, "ServiceUnavailable", "The service is temporarily unavailable. Please retry.", "")
}
