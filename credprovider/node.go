package credprovider

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// NodeOptions put the provider in node mode, for kubelets that send no
// ServiceAccount token (KubeletServiceAccountTokenForCredentialProviders
// off, Kubernetes before 1.34): every pull of a matching image on the node
// signs in as one node identity, with the token of the kvinject-node-identity
// DaemonSet's pod on this node, and reads the credential named here.
type NodeOptions struct {
	// ClientID is the node identity's client id (--node-identity).
	ClientID string
	// PullSecrets name the Key Vault secret holding the credential, per
	// image pattern (--pull-secret PATTERN=REF, in order: the first
	// pattern that matches the image wins).
	PullSecrets []NodePullSecret
	// Token says where the node identity's token is and whose it must be.
	Token NodeTokenSource
}

// NodePullSecret is one --pull-secret: an image pattern like the kubelet's
// matchImages and a secret reference like kvinject.io/pull-secret's.
type NodePullSecret struct {
	Pattern, Ref string
	loc          location
	ref          spec.Ref
}

// ParseNodePullSecret reads PATTERN=REF.
func ParseNodePullSecret(s string) (NodePullSecret, error) {
	pattern, ref, ok := strings.Cut(s, "=")
	if !ok || pattern == "" || ref == "" {
		return NodePullSecret{}, fmt.Errorf("%s is not PATTERN=REF (like mirror.example.com:5000=mirror-registry-creds)", spec.Quote(s))
	}
	return NodePullSecret{Pattern: pattern, Ref: ref}, nil
}

// String is the flag's form.
func (ps NodePullSecret) String() string { return ps.Pattern + "=" + ps.Ref }

// validate completes node options against the provider's tenant, vault and
// cloud, reporting every problem at once.
func (n *NodeOptions) validate(o Options) error {
	var errs []error
	if err := spec.ValidateClientID(n.ClientID); err != nil {
		errs = append(errs, fmt.Errorf("node identity client id: %w", err))
	}
	if o.TenantID == "" {
		errs = append(errs, errors.New("node mode needs the node identity's tenant id"))
	}
	if len(n.PullSecrets) == 0 {
		errs = append(errs, errors.New("node mode needs at least one pull secret PATTERN=REF"))
	}
	for i := range n.PullSecrets {
		ps := &n.PullSecrets[i]
		if strings.Contains(ps.Pattern, "://") {
			errs = append(errs, fmt.Errorf("pull secret pattern %s: no scheme, just host[:port][/path]", spec.Quote(ps.Pattern)))
		} else if loc, err := parseLocation(ps.Pattern); err != nil {
			errs = append(errs, fmt.Errorf("pull secret pattern: %w", err))
		} else {
			ps.loc = loc
		}
		ref, err := spec.ParseRef(ps.Ref, o.DefaultVault, o.Cloud)
		switch {
		case errors.Is(err, spec.ErrNoVault):
			errs = append(errs, fmt.Errorf("pull secret %s names no vault: give a default vault or a full secret URL", spec.Quote(ps.Ref)))
		case err != nil:
			errs = append(errs, fmt.Errorf("pull secret: %w", err))
		default:
			ps.ref = ref
		}
	}
	t := &n.Token
	if t.RootDir == "" {
		t.RootDir = DefaultKubeletRootDir
	}
	if t.Volume == "" {
		t.Volume = DefaultNodeTokenVolume
	}
	if t.Path == "" {
		t.Path = "token"
	}
	if t.Subject == "" {
		t.Subject = DefaultNodeTokenSubject
	}
	if t.Audience == "" {
		t.Audience = spec.TokenAudience
	}
	if t.Now == nil {
		t.Now = o.Now
	}
	if !filepath.IsAbs(t.RootDir) {
		errs = append(errs, fmt.Errorf("kubelet root dir %s: an absolute path", spec.Quote(t.RootDir)))
	}
	for _, p := range []struct{ what, v string }{{"token volume", t.Volume}, {"token path", t.Path}} {
		if strings.ContainsAny(p.v, `/\`) || p.v == "." || p.v == ".." {
			errs = append(errs, fmt.Errorf("%s %s: one path segment", p.what, spec.Quote(p.v)))
		}
	}
	if _, ok := strings.CutPrefix(t.Subject, "system:serviceaccount:"); !ok || strings.Count(t.Subject, ":") != 3 {
		errs = append(errs, fmt.Errorf("token subject %s: want system:serviceaccount:NAMESPACE:NAME", spec.Quote(t.Subject)))
	}
	if t.NodeName == "" {
		errs = append(errs, errors.New("node name unknown: give it (the kubelet's node name, its --hostname-override when set)"))
	}
	return errors.Join(errs...)
}

// pullSecretFor is the first configured secret whose pattern matches.
func (n *NodeOptions) pullSecretFor(im Image) (NodePullSecret, bool) {
	for _, ps := range n.PullSecrets {
		if ps.loc.matches(im.loc) {
			return ps, true
		}
	}
	return NodePullSecret{}, false
}

// nodeServiceAccount names the node identity's ServiceAccount, NS/NAME,
// in error lines.
func (n *NodeOptions) nodeServiceAccount() string {
	return strings.Replace(strings.TrimPrefix(n.Token.Subject, "system:serviceaccount:"), ":", "/", 1)
}

// provideNode answers in node mode: the node identity's token from the
// kubelet's pod directories, exchanged for the node identity, and the
// secret configured for the image's pattern. The answer is cached by the
// kubelet per registry for the cache duration, at most as long as the
// token has left: one exchange per registry and token lifetime on the node.
func (p *Provider) provideNode(ctx context.Context, req Request, im Image) (Response, error) {
	n := p.o.Node
	fail := func(pr keyvault.Problem, err error) (Response, error) {
		return Response{}, &Error{Image: req.Image, ServiceAccount: n.nodeServiceAccount(), Node: true, Problem: pr, err: err}
	}
	ps, ok := n.pullSecretFor(im)
	if !ok {
		patterns := make([]string, len(n.PullSecrets))
		for i, s := range n.PullSecrets {
			patterns[i] = s.Pattern
		}
		return fail(keyvault.Problem{Cause: "no --pull-secret pattern matches the image (patterns: " + strings.Join(patterns, ", ") + ")",
			Fix: "give the provider a --pull-secret PATTERN=REF for it, or narrow the kubelet's matchImages to the patterns"}, nil)
	}
	tok, err := n.Token.Find()
	if err != nil {
		return fail(keyvault.Problem{Cause: err.Error(), Fix: nodeTokenFix(err, n.Token)}, err)
	}
	reader, err := keyvault.NewReader(keyvault.ReaderOptions{
		ClientID: n.ClientID, TenantID: p.o.TenantID, ServiceAccountToken: tok.Token,
		Cloud: p.o.Cloud, AuthorityHost: p.o.AuthorityHost, Timeout: p.o.Timeout, Now: p.o.Now,
	})
	if err != nil {
		return fail(keyvault.Problem{Cause: err.Error(), Fix: "check " + spec.EnvAuthorityHost + " and the provider's --node-identity"}, err)
	}
	defer reader.Close()
	secret, err := reader.Read(ctx, ps.ref.ID())
	if err != nil {
		var re *keyvault.ReadError
		if !errors.As(err, &re) {
			return fail(keyvault.Problem{Vault: ps.ref.Vault, Secret: refLabel(ps.ref), Cause: "the secret could not be read"}, err)
		}
		return fail(re.Problem, err)
	}
	auth, pr, err := answer(im, ps.ref, secret.Value, p.matchImages)
	if pr != nil {
		pr.Fix = strings.Replace(pr.Fix, "annotate the ServiceAccount with the secret that has one", "point --pull-secret at the secret that has one", 1)
		if errors.Is(err, ErrNoRegistry) {
			pr.Fix = strings.Replace(pr.Fix, " in matchImages without a glob", " in matchImages without a glob (a --pull-secret "+im.Registry+"=... of credential-provider-config)", 1)
		}
		return fail(*pr, err)
	}
	d := p.o.CacheDuration
	if left := tok.Expiry.Sub(p.o.Now()).Truncate(time.Second); left < d {
		d = left
	}
	return Response{CacheKeyType: cacheKeyType, CacheDuration: &Duration{d}, Auth: auth}, nil
}

// nodeTokenFix says what to do when no token could be used.
func nodeTokenFix(err error, s NodeTokenSource) string {
	switch {
	case errors.Is(err, ErrNodeTokenNode):
		return "give the provider --node-name with the kubelet's node name (its --hostname-override)"
	case errors.Is(err, ErrNodeTokenSubject), errors.Is(err, ErrNodeTokenAudience):
		return fmt.Sprintf("the volume %s must be a projected serviceAccountToken of %s with audience %s (manifests/node-identity), or give the provider --node-token-subject", s.Volume, s.Subject, s.Audience)
	case errors.Is(err, ErrNodeTokenExpired):
		return "the kubelet renews projected tokens before they expire: check that the kvinject-node-identity pod on this node is running and the kubelet healthy"
	case errors.Is(err, ErrNoNodeToken):
		return "run the kvinject-node-identity DaemonSet on this node (manifests/node-identity), or give the provider --kubelet-root-dir and --node-token-volume as the kubelet and the DaemonSet have them"
	default:
		return "check the kvinject-node-identity pod on this node and the provider's --kubelet-root-dir"
	}
}
