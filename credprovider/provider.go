package credprovider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/secretform"
	"github.com/kvinject/kvinject/internal/spec"
)

// Defaults of Options.
const (
	// DefaultCacheDuration is how long the kubelet keeps an answer. Its
	// cache is per ServiceAccount and registry (see cacheKeyType), so this
	// bounds how long a rotated credential in Key Vault, a removed
	// federated credential or a removed role keeps serving pulls on a node
	// that already asked: five minutes, against one token exchange and one
	// secret read per ServiceAccount, registry and node in that time.
	DefaultCacheDuration = 5 * time.Minute
	// DefaultTimeout stays under the kubelet's one minute per plugin run,
	// so that the plugin, not the kubelet's kill, says what it waited for.
	DefaultTimeout = 50 * time.Second
)

// cacheKeyType is Registry. In ServiceAccount-token mode the kubelet adds
// to every cache key the ServiceAccount's namespace, name and UID and the
// values of the annotations its tokenAttributes name (client id, tenant,
// pull secret; pkg/credentialprovider/plugin generateServiceAccountCacheKey),
// so no cache key type lets one ServiceAccount's answer serve another's
// pod, a ServiceAccount recreated under the same name, or one whose
// annotations changed. Among the three, Registry is the one that neither
// calls the plugin per repository (Image) nor lets an answer for one
// registry stand for the others the provider matches (Global, whose cached
// answer would lack their entries and send those pulls anonymous until it
// expires). Credential.Auth fills the answer for the whole registry.
const cacheKeyType = CacheKeyRegistry

// Options configure the provider. New validates them once.
type Options struct {
	// TenantID is the tenant when the ServiceAccount has no
	// azure.workload.identity/tenant-id annotation (--tenant-id).
	TenantID string
	// DefaultVault is the vault a short pull-secret reference reads from
	// (--default-vault): a vault name or URL.
	DefaultVault string
	// Cloud gives vault names their host suffix and the default authority
	// host. Zero: the public cloud.
	Cloud spec.Cloud
	// AuthorityHost overrides the cloud's Entra ID host
	// (AZURE_AUTHORITY_HOST), as for the agent.
	AuthorityHost string
	// CacheDuration is the response's cacheDuration; zero keeps the
	// kubelet from caching at all. Default DefaultCacheDuration, through
	// Main's flag.
	CacheDuration time.Duration
	// Timeout bounds one run; default DefaultTimeout.
	Timeout time.Duration
	// MatchImages are the kubelet config's matchImages for this provider
	// (--match-images): a user:password or {"username","password"}
	// credential names no registry, so it answers only for a registry an
	// entry without a glob names.
	MatchImages []string
	// Now replaces time.Now (tests).
	Now func() time.Time
	// Node, when set, is node mode: requests carry no ServiceAccount token
	// and every matching pull signs in as the node identity.
	Node *NodeOptions
}

// Provider answers the kubelet's requests.
type Provider struct {
	o           Options
	matchImages []MatchImage
}

// New validates o, reporting every problem at once.
func New(o Options) (*Provider, error) {
	var errs []error
	if o.Cloud.Name == "" {
		o.Cloud = spec.PublicCloud()
	}
	if o.TenantID != "" {
		if err := spec.ValidateTenantID(o.TenantID); err != nil {
			errs = append(errs, fmt.Errorf("tenant id: %w", err))
		}
	}
	var vaultErr error
	if o.DefaultVault != "" {
		o.DefaultVault, vaultErr = spec.ParseVault(o.DefaultVault, o.Cloud)
		if vaultErr != nil {
			errs = append(errs, fmt.Errorf("default vault: %w", vaultErr))
		}
	}
	// The agent's rule: a value the agent refuses is refused here too.
	if _, err := spec.ParseAuthorityHost(o.AuthorityHost, o.Cloud); err != nil {
		errs = append(errs, fmt.Errorf("%s %w", spec.EnvAuthorityHost, err))
	}
	if o.CacheDuration < 0 {
		errs = append(errs, fmt.Errorf("cache duration %v is negative", o.CacheDuration))
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultTimeout
	case o.Timeout < 0:
		errs = append(errs, fmt.Errorf("timeout %v is negative", o.Timeout))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Node != nil && vaultErr == nil {
		// Node mode reads pull secrets against the default vault above.
		n := *o.Node
		n.PullSecrets = append([]NodePullSecret(nil), n.PullSecrets...)
		if err := n.validate(o); err != nil {
			errs = append(errs, err)
		}
		o.Node = &n
	}
	m, err := ParseMatchImages(o.MatchImages)
	if err != nil {
		errs = append(errs, fmt.Errorf("match images: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Provider{o: o, matchImages: m}, nil
}

// Error is why the provider gave the kubelet no credential: one line
// naming the image and the ServiceAccount (from the token's subject), then
// the problem as the agent words it. No token, no value.
type Error struct {
	Image, ServiceAccount string
	// Node marks node mode: ServiceAccount is the node identity's.
	Node    bool
	Problem keyvault.Problem
	err     error
}

func (e *Error) Error() string {
	var where []string
	if e.Image != "" {
		where = append(where, "image "+e.Image)
	}
	switch {
	case e.ServiceAccount != "" && e.Node:
		where = append(where, "node identity ServiceAccount "+e.ServiceAccount)
	case e.ServiceAccount != "":
		where = append(where, "ServiceAccount "+e.ServiceAccount)
	}
	line := e.Problem.Public()
	if len(where) > 0 {
		line = "error: " + strings.Join(where, ", ") + ", " + strings.TrimPrefix(line, "error: ")
	}
	return lineBreaks.Replace(line)
}

// lineBreaks keeps the error one line whatever the request's image holds.
var lineBreaks = strings.NewReplacer("\r", " ", "\n", " ", "\t", " ")

// Unwrap gives the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.err }

// Provide answers one request: sign in as the ServiceAccount's identity,
// read its pull secret, and return the credential for the image's
// registry. A failure is an *Error.
func (p *Provider) Provide(ctx context.Context, req Request) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	fail := func(pr keyvault.Problem, err error) (Response, error) {
		return Response{}, &Error{Image: req.Image, ServiceAccount: serviceAccountOf(req.ServiceAccountToken), Problem: pr, err: err}
	}
	im, err := ParseImage(req.Image)
	if err != nil {
		return fail(keyvault.Problem{Cause: err.Error(), Fix: "check the pod's image"}, err)
	}
	if p.o.Node != nil {
		return p.provideNode(ctx, req, im)
	}
	if req.ServiceAccountToken == "" {
		return fail(keyvault.Problem{Cause: "the kubelet sent no ServiceAccount token",
			Fix: "give this provider tokenAttributes in the kubelet's CredentialProviderConfig (kvinject credential-provider-config prints it) and, " +
				"on Kubernetes 1.33, enable the kubelet feature gate KubeletServiceAccountTokenForCredentialProviders"}, nil)
	}
	sa, pr, err := p.pullSecretOf(req.ServiceAccountAnnotations)
	if pr != nil {
		return fail(*pr, err)
	}
	reader, err := keyvault.NewReader(keyvault.ReaderOptions{
		ClientID: sa.clientID, TenantID: sa.tenantID, ServiceAccountToken: req.ServiceAccountToken,
		Cloud: p.o.Cloud, AuthorityHost: p.o.AuthorityHost, Timeout: p.o.Timeout, Now: p.o.Now,
	})
	if err != nil {
		return fail(keyvault.Problem{Cause: err.Error(), Fix: "check " + spec.EnvAuthorityHost + " and the ServiceAccount's annotations"}, err)
	}
	defer reader.Close()
	secret, err := reader.Read(ctx, sa.ref.ID())
	if err != nil {
		var re *keyvault.ReadError
		if !errors.As(err, &re) { // Read explains its failures: a fallback, not a panic
			return fail(keyvault.Problem{Vault: sa.ref.Vault, Secret: refLabel(sa.ref), Cause: "the secret could not be read"}, err)
		}
		return fail(re.Problem, err)
	}
	auth, pr, err := answer(im, sa.ref, secret.Value, p.matchImages)
	if pr != nil {
		return fail(*pr, err)
	}
	return Response{CacheKeyType: cacheKeyType, CacheDuration: &Duration{p.o.CacheDuration}, Auth: auth}, nil
}

// pullSecret is what a ServiceAccount's annotations ask for.
type pullSecret struct {
	clientID, tenantID string
	ref                spec.Ref
}

// pullSecretOf reads the annotations the kubelet passed, or says what is
// wrong with them.
func (p *Provider) pullSecretOf(ann map[string]string) (pullSecret, *keyvault.Problem, error) {
	problem := func(cause, fix string, err error) (pullSecret, *keyvault.Problem, error) {
		return pullSecret{}, &keyvault.Problem{Cause: cause, Fix: fix}, err
	}
	sa := pullSecret{clientID: ann[spec.SAAnnotationClientID], tenantID: p.o.TenantID}
	if err := spec.ValidateClientID(sa.clientID); err != nil {
		return problem(fmt.Sprintf("ServiceAccount annotation %s: %v", spec.SAAnnotationClientID, err),
			fmt.Sprintf("annotate the ServiceAccount with the identity's client id, and list %s in requiredServiceAccountAnnotationKeys", spec.SAAnnotationClientID), err)
	}
	if t := ann[spec.SAAnnotationTenantID]; t != "" {
		if err := spec.ValidateTenantID(t); err != nil {
			return problem(fmt.Sprintf("ServiceAccount annotation %s: %v", spec.SAAnnotationTenantID, err), "fix the annotation", err)
		}
		sa.tenantID = t
	}
	if sa.tenantID == "" {
		return problem("no tenant id", fmt.Sprintf("annotate the ServiceAccount with %s, or give the provider --tenant-id", spec.SAAnnotationTenantID), nil)
	}
	rawRef, ok := ann[spec.SAAnnotationPullSecret]
	if !ok {
		return problem(fmt.Sprintf("the ServiceAccount has no annotation %s", spec.SAAnnotationPullSecret),
			fmt.Sprintf("annotate it with the Key Vault secret holding the registry credential, and list %s in requiredServiceAccountAnnotationKeys", spec.SAAnnotationPullSecret), nil)
	}
	ref, err := spec.ParseRef(rawRef, p.o.DefaultVault, p.o.Cloud)
	if err != nil {
		cause, fix := err.Error(), "fix the annotation: <name>[/<version>][#<path>] or https://<vault-host>/secrets/<name>"
		if errors.Is(err, spec.ErrNoVault) {
			// The spec's message names the pod annotation kvinject.io/vault,
			// which has no say here.
			cause = fmt.Sprintf("reference %s names no vault", spec.Quote(rawRef))
			fix = "give the provider --default-vault, or use a full secret URL in the annotation"
		}
		return problem(fmt.Sprintf("ServiceAccount annotation %s: %s", spec.SAAnnotationPullSecret, cause), fix, err)
	}
	sa.ref = ref
	return sa, nil, nil
}

// answer turns the secret's value into the response's auth for the image:
// the ref's property first, then the credential's entries for the image's
// registry.
func answer(im Image, ref spec.Ref, value string, matchImages []MatchImage) (map[string]AuthConfig, *keyvault.Problem, error) {
	problem := func(cause, fix string, err error) (map[string]AuthConfig, *keyvault.Problem, error) {
		return nil, &keyvault.Problem{Vault: ref.Vault, Secret: refLabel(ref), Cause: cause, Fix: fix}, err
	}
	if ref.Path != "" {
		b, err := secretform.Extract(value, ref.Path)
		if err != nil {
			fix := "fix the path in the annotation, or the secret"
			var pe *secretform.PropertyError
			if errors.As(err, &pe) && pe.Fix != "" {
				fix = pe.Fix
			}
			return problem(err.Error(), fix, err)
		}
		value = string(b)
	}
	cred, err := ParseCredential(value)
	if err != nil {
		return problem(err.Error(), `store a dockerconfigjson ({"auths":{"registry.example.com":{"auth":"<base64 of user:password>"}}}), user:password, or {"username":"...","password":"..."}`, err)
	}
	if cred.Any != nil {
		if cause, fix := registryLessProblem(im, matchImages); cause != "" {
			return problem(cause, fix, ErrNoRegistry)
		}
	}
	auth, err := cred.Auth(im)
	if err != nil {
		return problem(err.Error(), "add an entry for "+im.Registry+" to the dockerconfigjson, or annotate the ServiceAccount with the secret that has one", err)
	}
	return auth, nil, nil
}

// ErrNoRegistry marks a credential without a registry refused for an image
// whose registry the operator did not name.
var ErrNoRegistry = errors.New("a credential without a registry, for a registry nobody named")

// registryLessProblem says why a credential that names no registry may not
// answer for the image: its registry must be named by an entry of
// matchImages without a glob, or a typo in an image name under a glob such
// as *.azurecr.io would send the password to whoever runs that registry.
func registryLessProblem(im Image, matchImages []MatchImage) (cause, fix string) {
	const what = `the secret holds a user:password or {"username","password"} credential, which names no registry`
	dockerFix := fmt.Sprintf(`store a dockerconfigjson with an entry for %s ({"auths":{"%s":{"auth":"<base64 of user:password>"}}})`, im.Registry, im.Registry)
	named, glob := namedRegistry(im, matchImages)
	switch {
	case named:
		return "", ""
	case len(matchImages) == 0:
		return what + ", and the provider was not given its matchImages (--match-images) to know which registries you meant",
			dockerFix + ", or write the kubelet's config with kvinject credential-provider-config, which passes --match-images to the provider"
	case glob != "":
		return fmt.Sprintf("%s, and the image's registry %s is matched only by the glob %s of matchImages: a mistyped image name would send the password to whoever runs that registry", what, im.Registry, spec.Quote(glob)),
			dockerFix + ", or list " + im.Registry + " in matchImages without a glob"
	default:
		return fmt.Sprintf("%s, and the image's registry %s matches none of the provider's --match-images", what, im.Registry),
			"give the provider the config's matchImages as --match-images (kvinject credential-provider-config writes both), or " + dockerFix
	}
}

// refLabel names the secret as the agent's diagnostics do, with the path.
func refLabel(r spec.Ref) string {
	s := r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	if r.Path != "" {
		s += "#" + r.Path
	}
	return s
}

// serviceAccountOf names the token's ServiceAccount, NS/NAME, from its
// public subject claim; "" when the token says otherwise.
func serviceAccountOf(token string) string {
	if token == "" {
		return ""
	}
	c, err := keyvault.ParseTokenClaims(token)
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(c.Subject, "system:serviceaccount:")
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" || strings.ContainsAny(rest, " \t\r\n") {
		return ""
	}
	return ns + "/" + name
}
