package cacheserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// TokenReviewer asks the API server whether a token is valid for the
// audience api://AzureADTokenExchange.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error)
}

// APITokenReviewer is the production TokenReviewer: a TokenReview create.
// The API server checks the signature, the expiry, the audience and, for a
// token bound to a pod, that the pod still exists with that uid.
type APITokenReviewer struct {
	Client authenticationclient.TokenReviewInterface
}

// NewAPITokenReviewer returns a TokenReviewer of the API server cfg names.
// The cache's ServiceAccount needs create on tokenreviews.
//
// Unless cfg sets a rate limit of its own, client-go's is turned off: its
// default, 5 requests a second after a burst of 10, is meant for
// controllers, and made every request past a rollout's tenth pod wait for
// its review (50 pods through 2 replicas: about 1 s each, 5 s in all, for
// values already cached). The cache bounds its reviews itself
// (Options.MaxConcurrentReviews in flight, Options.ReviewWait), and the API
// server's priority and fairness protects the API server.
func NewAPITokenReviewer(cfg *rest.Config) (*APITokenReviewer, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS = -1 // client-go: no client-side rate limit
	}
	c, err := authenticationclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("token review client: %w", err)
	}
	return &APITokenReviewer{Client: c.TokenReviews()}, nil
}

// Review creates a TokenReview for the Entra ID token exchange audience.
func (r *APITokenReviewer) Review(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := r.Client.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{spec.TokenAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("review token: %w", err)
	}
	return tr.Status, nil
}

// The extra keys of a pod-bound service-account token's user.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

const serviceAccountPrefix = "system:serviceaccount:"

// caller is a proven pod identity.
type caller struct {
	Subject            string // system:serviceaccount:NS:SA, the federated credential's subject
	Namespace, Pod     string
	ServiceAccountName string
}

// Refusal reasons: the label of kvinject_cache_refusals_total and the
// "reason" of the log line.
const (
	reasonNoToken           = "no-token"
	reasonNotAJWT           = "not-a-jwt"
	reasonWrongAudience     = "wrong-audience"
	reasonExpired           = "expired"
	reasonPodGone           = "pod-gone"
	reasonNotAuthenticated  = "not-authenticated"
	reasonNotServiceAccount = "not-a-serviceaccount"
	reasonNotPodBound       = "not-pod-bound"
	reasonReviewFailed      = "review-failed"
	reasonReviewBusy        = "review-busy"
	reasonRateLimited       = "rate-limited"
	reasonTooLarge          = "too-large"
	reasonBadRequest        = "bad-request"
	reasonMethod            = "method"
	reasonContentType       = "content-type"
	reasonBusy              = "busy"
	reasonNamespaceBusy     = "namespace-busy"
	reasonSlowBody          = "slow-body"
)

var allReasons = []string{reasonNoToken, reasonNotAJWT, reasonWrongAudience, reasonExpired, reasonPodGone,
	reasonNotAuthenticated, reasonNotServiceAccount, reasonNotPodBound, reasonReviewFailed, reasonReviewBusy, reasonRateLimited,
	reasonTooLarge, reasonBadRequest, reasonMethod, reasonContentType, reasonBusy, reasonNamespaceBusy, reasonSlowBody}

// refusal is why a request gets no answer: an HTTP status, a reason label
// and the exact message (no token, no value).
type refusal struct {
	status  int
	reason  string
	message string
}

func (r *refusal) Error() string { return r.reason + ": " + r.message }

// proveCaller turns a TokenReview's status into a caller, or the exact
// reason it is refused.
func proveCaller(st authenticationv1.TokenReviewStatus, token string, now time.Time) (caller, *refusal) {
	unauthorized := func(reason, format string, args ...any) (caller, *refusal) {
		return caller{}, &refusal{status: 401, reason: reason, message: fmt.Sprintf(format, args...)}
	}
	if !st.Authenticated {
		return explainUnauthenticated(st.Error, token, now)
	}
	if !slices.Contains(st.Audiences, spec.TokenAudience) {
		return unauthorized(reasonWrongAudience, "the API server authenticated the token for the audiences %q, not %s", st.Audiences, spec.TokenAudience)
	}
	name := st.User.Username
	rest, ok := strings.CutPrefix(name, serviceAccountPrefix)
	ns, sa, _ := strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return unauthorized(reasonNotServiceAccount, "the token is of %q, not of a ServiceAccount (system:serviceaccount:NAMESPACE:NAME)", name)
	}
	pod, uid := firstExtra(st.User.Extra, extraPodName), firstExtra(st.User.Extra, extraPodUID)
	if pod == "" || uid == "" {
		return unauthorized(reasonNotPodBound, "the token of %s is not bound to a pod (no %s and %s): only a pod's projected token is accepted", name, extraPodName, extraPodUID)
	}
	return caller{Subject: name, Namespace: ns, ServiceAccountName: sa, Pod: pod}, nil
}

func firstExtra(extra map[string]authenticationv1.ExtraValue, key string) string {
	if v := extra[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// explainUnauthenticated says why the API server refused a token. The
// token's claims are read unverified, only to name the reason of a refusal
// that is already decided; nothing is ever accepted on them.
func explainUnauthenticated(apiError, token string, now time.Time) (caller, *refusal) {
	refuse := func(reason, format string, args ...any) (caller, *refusal) {
		msg := fmt.Sprintf(format, args...)
		if apiError != "" {
			msg += fmt.Sprintf(" (API server: %s)", strings.TrimSpace(apiError))
		}
		return caller{}, &refusal{status: 401, reason: reason, message: msg}
	}
	claims, err := keyvault.ParseTokenClaims(token)
	if err != nil {
		return refuse(reasonNotAJWT, "the bearer token is not a service-account token: %v", err)
	}
	if !slices.Contains(claims.Audience, spec.TokenAudience) {
		return refuse(reasonWrongAudience, "the token's audience is %q, not %s", claims.Audience, spec.TokenAudience)
	}
	if !claims.Expiry.IsZero() && !now.Before(claims.Expiry) {
		return refuse(reasonExpired, "the token expired at %s", claims.Expiry.Format(time.RFC3339))
	}
	if pod, ok := boundPod(token); ok {
		return refuse(reasonPodGone, "the token of %s is bound to pod %s, which no longer exists (or the token was not signed by this cluster)", claims.Subject, pod)
	}
	return refuse(reasonNotAuthenticated, "the API server did not authenticate the token of %q", claims.Subject)
}

// boundPod reads the unverified kubernetes.io.pod claim of a
// service-account token: "namespace/name (uid)".
func boundPod(token string) (string, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var c struct {
		K8s struct {
			Namespace string `json:"namespace"`
			Pod       *struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
	if json.Unmarshal(payload, &c) != nil || c.K8s.Pod == nil {
		return "", false
	}
	return fmt.Sprintf("%s/%s (uid %s)", c.K8s.Namespace, c.K8s.Pod.Name, c.K8s.Pod.UID), true
}

// maxTokenBytes bounds a bearer token: a projected service-account token
// takes about 1 KiB.
const maxTokenBytes = 16 << 10

// precheckToken refuses, before any TokenReview, a bearer token that
// cannot be a live projected token for the exchange audience: not a JWT
// (three base64url parts, a header naming an algorithm), of another
// audience, without an expiry or expired, or of a user other than a
// ServiceAccount. Nothing is verified here and nothing is accepted on it:
// the API server's TokenReview stays the authority. It keeps garbage from
// taking review slots. now is the wall clock, which the API server judges
// the expiry by.
func precheckToken(token string, now time.Time) *refusal {
	unauthorized := func(reason, format string, args ...any) *refusal {
		return &refusal{status: http.StatusUnauthorized, reason: reason, message: fmt.Sprintf(format, args...)}
	}
	if len(token) > maxTokenBytes {
		return unauthorized(reasonNotAJWT, "the bearer token is %d bytes, over %d: not a service-account token", len(token), maxTokenBytes)
	}
	claims, err := keyvault.ParseTokenClaims(token)
	if err == nil {
		err = checkJWTHeader(token)
	}
	if err != nil {
		return unauthorized(reasonNotAJWT, "the bearer token is not a service-account token: %v", err)
	}
	if !slices.Contains(claims.Audience, spec.TokenAudience) {
		return unauthorized(reasonWrongAudience, "the token's audience is %q, not %s", claims.Audience, spec.TokenAudience)
	}
	if claims.Expiry.IsZero() {
		return unauthorized(reasonNotAJWT, "the token has no expiry (exp): not a projected service-account token")
	}
	if !now.Before(claims.Expiry) {
		return unauthorized(reasonExpired, "the token expired at %s", claims.Expiry.Format(time.RFC3339))
	}
	rest, ok := strings.CutPrefix(claims.Subject, serviceAccountPrefix)
	ns, sa, _ := strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return unauthorized(reasonNotServiceAccount, "the token's subject %q is not a ServiceAccount (system:serviceaccount:NAMESPACE:NAME)", claims.Subject)
	}
	return nil
}

// checkJWTHeader checks a JWT's header names a signing algorithm and its
// signature part is base64url; the signature itself is the API server's
// to check.
func checkJWTHeader(token string) error {
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return errors.New("the token's header is not base64url")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return errors.New("the token's header is not a JSON object")
	}
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") {
		return fmt.Errorf("the token's header names no signing algorithm (alg %q)", h.Alg)
	}
	if parts[2] == "" {
		return errors.New("the token has no signature")
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return errors.New("the token's signature is not base64url")
	}
	return nil
}
