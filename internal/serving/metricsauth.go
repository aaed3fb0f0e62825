package serving

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Bounds of the metrics endpoint's authentication and authorization.
const (
	// metricsReviewTimeout bounds one TokenReview or SubjectAccessReview.
	metricsReviewTimeout = 10 * time.Second
	// metricsMaxReviews is how many callers are reviewed at once; one
	// that finds no slot within metricsReviewWait gets 503.
	metricsMaxReviews = 4
	metricsReviewWait = 5 * time.Second
	// Decisions are kept this long, at most metricsMaxDecisions of them:
	// a scraper every 15 s is reviewed once a minute.
	metricsAllowTTL     = time.Minute
	metricsDenyTTL      = 10 * time.Second
	metricsMaxDecisions = 256
)

// Reviews are what the metrics filter asks the API server: whether a
// bearer token is valid, and whether its user may use a verb on a
// non-resource path.
type Reviews interface {
	ReviewToken(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error)
	ReviewAccess(ctx context.Context, user authenticationv1.UserInfo, verb, path string) (authorizationv1.SubjectAccessReviewStatus, error)
}

// APIReviews are Reviews through the API server's authentication/v1
// TokenReview and authorization/v1 SubjectAccessReview.
type APIReviews struct {
	Tokens authenticationclient.TokenReviewInterface
	Access authorizationclient.SubjectAccessReviewInterface
}

// NewAPIReviews makes APIReviews for cfg.
func NewAPIReviews(cfg *rest.Config, hc *http.Client) (*APIReviews, error) {
	authn, err := authenticationclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("TokenReview client: %w", err)
	}
	authz, err := authorizationclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("SubjectAccessReview client: %w", err)
	}
	return &APIReviews{Tokens: authn.TokenReviews(), Access: authz.SubjectAccessReviews()}, nil
}

// ReviewToken implements Reviews.
func (r *APIReviews) ReviewToken(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := r.Tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, err
	}
	return tr.Status, nil
}

// ReviewAccess implements Reviews.
func (r *APIReviews) ReviewAccess(ctx context.Context, user authenticationv1.UserInfo, verb, path string) (authorizationv1.SubjectAccessReviewStatus, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := r.Access.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return authorizationv1.SubjectAccessReviewStatus{}, err
	}
	return sar.Status, nil
}

// MetricsAuth is the metrics server's filter provider: a request passes
// when its bearer token passes a TokenReview and the token's user may use
// the request's method (lowercase) on its path, as a SubjectAccessReview
// for a non-resource URL says. It asks the API server the same two
// questions as the Kubernetes components' delegated authentication and
// authorization.
func MetricsAuth(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	r, err := NewAPIReviews(cfg, hc)
	if err != nil {
		return nil, err
	}
	return MetricsFilter(r), nil
}

// MetricsFilter is MetricsAuth's filter with its reviews.
func MetricsFilter(r Reviews) metricsserver.Filter {
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return newMetricsAuth(r, log).wrap(next), nil
	}
}

func newMetricsAuth(r Reviews, log logr.Logger) *metricsAuth {
	return &metricsAuth{reviews: r, log: log, slots: make(chan struct{}, metricsMaxReviews),
		decisions: map[[sha256.Size]byte]decision{}, now: time.Now}
}

type decision struct {
	status  int // 0: allowed, else the HTTP status to answer
	user    string
	expires time.Time
}

type metricsAuth struct {
	reviews Reviews
	log     logr.Logger
	slots   chan struct{}
	now     func() time.Time

	mu        sync.Mutex
	decisions map[[sha256.Size]byte]decision
}

var errNoReviewSlot = errors.New("too many metrics requests being reviewed")

func (a *metricsAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, ok := bearerToken(req)
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := strings.ToLower(req.Method)
		key := sha256.Sum256([]byte(verb + "\x00" + req.URL.Path + "\x00" + token))
		d, err := a.decide(req.Context(), key, token, verb, req.URL.Path)
		switch {
		case errors.Is(err, errNoReviewSlot):
			http.Error(w, "Too many requests being reviewed, retry later", http.StatusServiceUnavailable)
			return
		case err != nil:
			a.log.Error(err, "cannot review a metrics request")
			http.Error(w, "Authentication or authorization failed", http.StatusInternalServerError)
			return
		}
		switch d.status {
		case 0:
			next.ServeHTTP(w, req)
		case http.StatusUnauthorized:
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
		default:
			http.Error(w, fmt.Sprintf("Authorization denied for user %s", d.user), d.status)
		}
	})
}

// bearerToken is the request's "Authorization: Bearer" token.
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(req.Header.Get("Authorization")), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "bearer") && token != ""
}

// decide returns the kept decision for key, else reviews the request.
func (a *metricsAuth) decide(ctx context.Context, key [sha256.Size]byte, token, verb, path string) (decision, error) {
	now := a.now()
	a.mu.Lock()
	d, ok := a.decisions[key]
	a.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d, nil
	}
	wait := time.NewTimer(metricsReviewWait)
	defer wait.Stop()
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-wait.C:
		return decision{}, errNoReviewSlot
	case <-ctx.Done():
		return decision{}, ctx.Err()
	}
	d, err := a.review(ctx, token, verb, path)
	if err != nil {
		return decision{}, err
	}
	ttl := metricsAllowTTL
	if d.status != 0 {
		ttl = metricsDenyTTL
	}
	d.expires = a.now().Add(ttl)
	a.mu.Lock()
	if len(a.decisions) >= metricsMaxDecisions {
		clear(a.decisions)
	}
	a.decisions[key] = d
	a.mu.Unlock()
	return d, nil
}

func (a *metricsAuth) review(ctx context.Context, token, verb, path string) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsReviewTimeout)
	defer cancel()
	tr, err := a.reviews.ReviewToken(ctx, token)
	if err != nil {
		return decision{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Authenticated {
		a.log.V(1).Info("metrics request not authenticated", "error", tr.Error)
		return decision{status: http.StatusUnauthorized}, nil
	}
	sar, err := a.reviews.ReviewAccess(ctx, tr.User, verb, path)
	if err != nil {
		return decision{}, fmt.Errorf("SubjectAccessReview for %s: %w", tr.User.Username, err)
	}
	if !sar.Allowed || sar.Denied {
		a.log.V(1).Info("metrics request denied", "user", tr.User.Username, "reason", sar.Reason)
		return decision{status: http.StatusForbidden, user: tr.User.Username}, nil
	}
	return decision{user: tr.User.Username}, nil
}
