package azemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// knobsJSON is the admin API form of Knobs, with durations as strings
// ("150ms") so curl users need not count nanoseconds.
type knobsJSON struct {
	RequestLatency string      `json:"requestLatency,omitempty"`
	ConnLatency    string      `json:"connLatency,omitempty"`
	BandwidthBPS   int64       `json:"bandwidthBPS,omitempty"`
	FaultRate      float64     `json:"faultRate,omitempty"`
	RateFaults     []faultJSON `json:"rateFaults,omitempty"`
	RateClasses    []Class     `json:"rateClasses,omitempty"`
}

type faultJSON struct {
	Kind       FaultKind `json:"kind"`
	RetryAfter string    `json:"retryAfter,omitempty"`
}

func (f faultJSON) fault() (Fault, error) {
	out := Fault{Kind: f.Kind}
	switch f.Kind {
	case FaultThrottle, FaultUnavailable, FaultReset:
	default:
		return Fault{}, fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	if f.RetryAfter != "" {
		d, err := time.ParseDuration(f.RetryAfter)
		if err != nil {
			return Fault{}, fmt.Errorf("retryAfter: %w", err)
		}
		out.RetryAfter = d
	}
	return out, nil
}

func parseDur(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

func (k knobsJSON) knobs() (Knobs, error) {
	var out Knobs
	var err error
	if out.RequestLatency, err = parseDur(k.RequestLatency); err != nil {
		return Knobs{}, fmt.Errorf("requestLatency: %w", err)
	}
	if out.ConnLatency, err = parseDur(k.ConnLatency); err != nil {
		return Knobs{}, fmt.Errorf("connLatency: %w", err)
	}
	if k.BandwidthBPS < 0 || k.FaultRate < 0 || k.FaultRate > 1 {
		return Knobs{}, fmt.Errorf("bandwidthBPS must be >= 0 and faultRate in [0,1]")
	}
	out.BandwidthBPS, out.FaultRate, out.RateClasses = k.BandwidthBPS, k.FaultRate, k.RateClasses
	for _, f := range k.RateFaults {
		ff, err := f.fault()
		if err != nil {
			return Knobs{}, err
		}
		out.RateFaults = append(out.RateFaults, ff)
	}
	return out, nil
}

func (e *Emulator) startAdmin() error {
	ln, err := net.Listen("tcp", e.opts.AdminAddr)
	if err != nil {
		return fmt.Errorf("azemu: admin listener: %w", err)
	}
	e.adminURL = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: e.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(e.log)}
	e.serve(srv, ln, false)
	return nil
}

// AdminHandler serves the admin API (also mounted on Options.AdminAddr):
//
//	GET  /stats                   Stats as JSON
//	POST /stats/reset             ResetStats
//	POST /secrets                 {"vault","name","value","contentType","certificate"} -> {"version"}
//	POST /secrets/delete          {"vault","name"}: DeleteSecret
//	POST /federated-credentials   {"clientID","name","issuer","subject","audiences"}: AddFederatedCredential
//	POST /federated-credentials/delete {"clientID","name"}: RemoveFederatedCredential
//	POST /knobs                   knobs: {"requestLatency":"150ms","connLatency":"50ms",
//	                              "bandwidthBPS":200000,"faultRate":0.1,
//	                              "rateFaults":[{"kind":"throttle","retryAfter":"1s"}],"rateClasses":["kv-get"]}
//	GET  /knobs                   current knobs
//	POST /faults                  {"class":"token","count":2,"kind":"unavailable","retryAfter":"1s"}
//	POST /faults/clear            ClearFaults
//	POST /jwks/flush              FlushJWKSCache
//
// Request bodies never echo secret values back, and the handler logs
// nothing about them.
func (e *Emulator) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("POST /stats/reset", func(w http.ResponseWriter, _ *http.Request) {
		e.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /secrets", e.adminSetSecret)
	mux.HandleFunc("POST /secrets/delete", e.adminDeleteSecret)
	mux.HandleFunc("POST /federated-credentials", e.adminAddFederatedCredential)
	mux.HandleFunc("POST /federated-credentials/delete", e.adminRemoveFederatedCredential)
	mux.HandleFunc("GET /knobs", e.adminGetKnobs)
	mux.HandleFunc("POST /knobs", e.adminSetKnobs)
	mux.HandleFunc("POST /faults", e.adminFailNext)
	mux.HandleFunc("POST /faults/clear", func(w http.ResponseWriter, _ *http.Request) {
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /jwks/flush", func(w http.ResponseWriter, _ *http.Request) {
		e.FlushJWKSCache()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func badRequest(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// decodeAdmin decodes an admin request's JSON body, at most 1 MiB, with no
// unknown field.
func decodeAdmin(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (e *Emulator) adminSetSecret(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Vault, Name, Value, ContentType string
		Certificate                     bool
	}
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	ver, err := e.AddSecretVersion(req.Vault, req.Name, SecretVersion{Value: req.Value, ContentType: req.ContentType, Certificate: req.Certificate})
	if err != nil {
		badRequest(w, err)
		return
	}
	e.log.Info("admin set secret", "vault", req.Vault, "secret", req.Name, "version", ver)
	writeJSON(w, http.StatusOK, map[string]string{"version": ver})
}

func (e *Emulator) adminDeleteSecret(w http.ResponseWriter, r *http.Request) {
	var req struct{ Vault, Name string }
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	if err := e.DeleteSecret(req.Vault, req.Name); err != nil {
		badRequest(w, err)
		return
	}
	e.log.Info("admin deleted secret", "vault", req.Vault, "secret", req.Name)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) adminAddFederatedCredential(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientID string `json:"clientID"`
		FederatedCredential
	}
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	if err := e.AddFederatedCredential(req.ClientID, req.FederatedCredential); err != nil {
		badRequest(w, err)
		return
	}
	e.log.Info("admin added federated credential", "clientID", req.ClientID, "name", req.Name, "subject", req.Subject)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) adminRemoveFederatedCredential(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientID string `json:"clientID"`
		Name     string `json:"name"`
	}
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	if err := e.RemoveFederatedCredential(req.ClientID, req.Name); err != nil {
		badRequest(w, err)
		return
	}
	e.log.Info("admin removed federated credential", "clientID", req.ClientID, "name", req.Name)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) adminGetKnobs(w http.ResponseWriter, _ *http.Request) {
	k := e.Knobs()
	out := knobsJSON{BandwidthBPS: k.BandwidthBPS, FaultRate: k.FaultRate, RateClasses: k.RateClasses}
	if k.RequestLatency > 0 {
		out.RequestLatency = k.RequestLatency.String()
	}
	if k.ConnLatency > 0 {
		out.ConnLatency = k.ConnLatency.String()
	}
	for _, f := range k.RateFaults {
		fj := faultJSON{Kind: f.Kind}
		if f.RetryAfter > 0 {
			fj.RetryAfter = f.RetryAfter.String()
		}
		out.RateFaults = append(out.RateFaults, fj)
	}
	writeJSON(w, http.StatusOK, out)
}

func (e *Emulator) adminSetKnobs(w http.ResponseWriter, r *http.Request) {
	var kj knobsJSON
	if err := decodeAdmin(r, &kj); err != nil {
		badRequest(w, err)
		return
	}
	k, err := kj.knobs()
	if err != nil {
		badRequest(w, err)
		return
	}
	e.SetKnobs(k)
	e.log.Info("admin set knobs", "requestLatency", k.RequestLatency, "connLatency", k.ConnLatency, "bandwidthBPS", k.BandwidthBPS, "faultRate", k.FaultRate)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) adminFailNext(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Class Class `json:"class"`
		Count int   `json:"count"`
		faultJSON
	}
	if err := decodeAdmin(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	f, err := req.fault()
	if err != nil {
		badRequest(w, err)
		return
	}
	if req.Count < 1 || req.Class == "" {
		badRequest(w, fmt.Errorf("class and a count >= 1 are required"))
		return
	}
	e.FailNext(req.Class, req.Count, f)
	e.log.Info("admin scripted faults", "class", string(req.Class), "count", req.Count, "kind", string(f.Kind))
	w.WriteHeader(http.StatusNoContent)
}
