package credprovider

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kvinject/kvinject/internal/spec"
)

// Node mode's defaults: where the token comes from and whose it must be.
const (
	// DefaultKubeletRootDir is the kubelet's --root-dir.
	DefaultKubeletRootDir = "/var/lib/kubelet"
	// DefaultNodeTokenVolume is the projected token volume of the
	// kvinject-node-identity DaemonSet's pod (manifests/node-identity).
	DefaultNodeTokenVolume = "kvinject-node-token"
	// DefaultNodeTokenSubject is that DaemonSet's ServiceAccount.
	DefaultNodeTokenSubject = "system:serviceaccount:kvinject-system:kvinject-node-identity"
	// MaxNodeTokenBytes bounds a token file: a ServiceAccount token is a
	// JWT of one or two kilobytes.
	MaxNodeTokenBytes = 16 << 10
	// maxPodDirs bounds the pod directories looked at in one run; a
	// kubelet runs at most a few hundred pods.
	maxPodDirs = 4096
	// minTokenLeft is the least lifetime a token must have left to be
	// exchanged: less, and Entra ID may see it expired.
	minTokenLeft = 30 * time.Second
	// maxClockSkew is how far in the future a token's iat or nbf may be.
	maxClockSkew = 5 * time.Minute
)

// Reasons a token file is refused, for errors.Is.
var (
	ErrNoNodeToken        = errors.New("no token file")
	ErrNodeTokenRead      = errors.New("the token file cannot be read")
	ErrNodeTokenTooLarge  = errors.New("the token file is too large")
	ErrNodeTokenEscapes   = errors.New("the token file resolves outside its volume")
	ErrNodeTokenMalformed = errors.New("the token is not a ServiceAccount JWT")
	ErrNodeTokenExpired   = errors.New("the token has expired")
	ErrNodeTokenNotYet    = errors.New("the token is not valid yet")
	ErrNodeTokenAudience  = errors.New("the token is for another audience")
	ErrNodeTokenSubject   = errors.New("the token is another ServiceAccount's")
	ErrNodeTokenPod       = errors.New("the token is bound to another pod")
	ErrNodeTokenNode      = errors.New("the token is bound to node")
)

// NodeTokenSource finds the node identity's token in the kubelet's pod
// directories: the projected serviceAccountToken volume of the
// kvinject-node-identity DaemonSet's pod on this node, which the kubelet
// keeps on a tmpfs (projected volumes are memory-backed emptyDirs) and
// renews before it expires.
type NodeTokenSource struct {
	// RootDir is the kubelet's --root-dir.
	RootDir string
	// Volume is the name of the pod's projected token volume, Path the
	// token's path in it.
	Volume, Path string
	// Subject is the ServiceAccount the token must be of, Audience the
	// audience it must carry.
	Subject, Audience string
	// NodeName is this node's name: a token bound to another node is
	// refused.
	NodeName string
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// NodeToken is a token found, with what the choice relied on.
type NodeToken struct {
	// Token is the JWT. String leaves it out.
	Token  string
	File   string
	PodUID string
	Expiry time.Time
}

// String names the token without it.
func (t NodeToken) String() string {
	return fmt.Sprintf("token of pod %s in %s (expires %s)", t.PodUID, t.File, t.Expiry.Format(time.RFC3339))
}

// GoString is String.
func (t NodeToken) GoString() string { return t.String() }

// RefusedToken is one token file and why it was not used.
type RefusedToken struct {
	File string
	Err  error
}

// NodeTokenError is why no token was found: the directory, or every
// candidate and its reason. It never quotes a token.
type NodeTokenError struct {
	Dir, Volume string
	Err         error // the directory's problem, when it could not be listed
	Refused     []RefusedToken
}

func (e *NodeTokenError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("the kubelet's pod directory %s cannot be read: %v", e.Dir, e.Err)
	}
	if len(e.Refused) == 0 {
		return fmt.Sprintf("no pod in %s has a projected volume %s", e.Dir, e.Volume)
	}
	parts := make([]string, 0, len(e.Refused))
	for _, r := range e.Refused {
		parts = append(parts, r.File+": "+r.Err.Error())
	}
	return "no usable node identity token: " + strings.Join(parts, "; ")
}

// Unwrap gives the reasons of every refused candidate, so that errors.Is
// finds any of them.
func (e *NodeTokenError) Unwrap() []error {
	errs := []error{}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Err == nil && len(e.Refused) == 0 {
		errs = append(errs, ErrNoNodeToken)
	}
	for _, r := range e.Refused {
		errs = append(errs, r.Err)
	}
	return errs
}

// maxRefusals bounds the reasons an error lists.
const maxRefusals = 5

// Find returns the usable token that expires last, or a *NodeTokenError.
func (s NodeTokenSource) Find() (NodeToken, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	podsDir := filepath.Join(s.RootDir, "pods")
	uids, err := listDir(podsDir, maxPodDirs)
	if err != nil {
		return NodeToken{}, &NodeTokenError{Dir: podsDir, Volume: s.Volume, Err: err}
	}
	var best NodeToken
	e := &NodeTokenError{Dir: podsDir, Volume: s.Volume}
	for _, uid := range uids {
		volDir := filepath.Join(podsDir, uid, "volumes", "kubernetes.io~projected", s.Volume)
		if _, err := os.Lstat(volDir); errors.Is(err, fs.ErrNotExist) {
			continue // another pod
		}
		file := filepath.Join(volDir, s.Path)
		t, err := s.check(volDir, file, uid, now())
		if err != nil {
			if len(e.Refused) < maxRefusals {
				e.Refused = append(e.Refused, RefusedToken{File: file, Err: err})
			}
			continue
		}
		if t.Expiry.After(best.Expiry) {
			best = t
		}
	}
	if best.Token == "" {
		return NodeToken{}, e
	}
	return best, nil
}

// listDir lists at most limit names of dir.
func listDir(dir string, limit int) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(limit)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// check reads one candidate and holds it to every rule.
func (s NodeTokenSource) check(volDir, file, podUID string, now time.Time) (NodeToken, error) {
	raw, err := readTokenFile(volDir, file)
	if err != nil {
		return NodeToken{}, err
	}
	c, err := parseNodeClaims(raw)
	if err != nil {
		return NodeToken{}, err
	}
	switch {
	case c.Subject != s.Subject:
		return NodeToken{}, fmt.Errorf("%w: subject %s, want %s", ErrNodeTokenSubject, spec.Quote(c.Subject), s.Subject)
	case !slices.Contains(c.Audience, s.Audience):
		return NodeToken{}, fmt.Errorf("%w: audience %s, want %s", ErrNodeTokenAudience, quoteAll(c.Audience), s.Audience)
	case c.Expiry.IsZero() || !now.Add(minTokenLeft).Before(c.Expiry):
		return NodeToken{}, fmt.Errorf("%w: exp %s", ErrNodeTokenExpired, c.Expiry.Format(time.RFC3339))
	case c.Expiry.Sub(now) > 24*time.Hour+maxClockSkew:
		return NodeToken{}, fmt.Errorf("%w: it expires %s, more than a day ahead: a projected token lives at most a day", ErrNodeTokenMalformed, c.Expiry.Format(time.RFC3339))
	case c.NotBefore.After(now.Add(maxClockSkew)) || c.IssuedAt.After(now.Add(maxClockSkew)):
		return NodeToken{}, fmt.Errorf("%w: issued %s", ErrNodeTokenNotYet, c.IssuedAt.Format(time.RFC3339))
	case c.PodUID != podUID:
		return NodeToken{}, fmt.Errorf("%w: its pod uid is %s, found in the directory of pod %s", ErrNodeTokenPod, spec.Quote(c.PodUID), podUID)
	case c.NodeName != "" && c.NodeName != s.NodeName:
		return NodeToken{}, fmt.Errorf("%w %s, this node is %s", ErrNodeTokenNode, spec.Quote(c.NodeName), spec.Quote(s.NodeName))
	}
	return NodeToken{Token: raw, File: file, PodUID: podUID, Expiry: c.Expiry}, nil
}

// readTokenFile reads at most MaxNodeTokenBytes of a token file that,
// symbolic links resolved (the kubelet's atomic writer links token to
// ..data/token), stays in its volume.
func readTokenFile(volDir, file string) (string, error) {
	resolved, err := filepath.EvalSymlinks(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w in the volume: check the serviceAccountToken's path", ErrNoNodeToken)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNodeTokenRead, err)
	}
	realVol, err := filepath.EvalSymlinks(volDir)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNodeTokenRead, err)
	}
	if rel, err := filepath.Rel(realVol, resolved); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", ErrNodeTokenEscapes
	}
	f, err := os.Open(resolved)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNodeTokenRead, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("%w: not a regular file", ErrNodeTokenRead)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxNodeTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNodeTokenRead, err)
	}
	if len(b) > MaxNodeTokenBytes {
		return "", fmt.Errorf("%w: more than %d bytes", ErrNodeTokenTooLarge, MaxNodeTokenBytes)
	}
	return strings.TrimSpace(string(b)), nil
}

// nodeClaims are the claims node mode checks.
type nodeClaims struct {
	Subject                     string
	Audience                    []string
	IssuedAt, NotBefore, Expiry time.Time
	PodUID, NodeName            string
}

// parseNodeClaims decodes a JWT's payload, unverified: the signature is
// Entra ID's to check against the issuer's keys. The checks here choose
// which file to present, they do not authenticate it. Errors never quote
// the token.
func parseNodeClaims(jwt string) (nodeClaims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nodeClaims{}, fmt.Errorf("%w: %d dot-separated parts, want 3", ErrNodeTokenMalformed, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nodeClaims{}, fmt.Errorf("%w: the payload is not base64url", ErrNodeTokenMalformed)
	}
	type ref struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	}
	var c struct {
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Iat json.Number     `json:"iat"`
		Nbf json.Number     `json:"nbf"`
		Exp json.Number     `json:"exp"`
		K   struct {
			Pod  *ref `json:"pod"`
			Node *ref `json:"node"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nodeClaims{}, fmt.Errorf("%w: the payload is not a JSON object of claims", ErrNodeTokenMalformed)
	}
	nc := nodeClaims{Subject: c.Sub}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		nc.Audience = []string{one}
	} else if json.Unmarshal(c.Aud, &nc.Audience) != nil {
		return nodeClaims{}, fmt.Errorf("%w: aud is neither a string nor a list of strings", ErrNodeTokenMalformed)
	}
	unix := func(n json.Number) time.Time {
		if i, err := n.Int64(); err == nil && i > 0 {
			return time.Unix(i, 0).UTC()
		}
		return time.Time{}
	}
	nc.IssuedAt, nc.NotBefore, nc.Expiry = unix(c.Iat), unix(c.Nbf), unix(c.Exp)
	if c.K.Pod == nil || c.K.Pod.UID == "" {
		return nodeClaims{}, fmt.Errorf("%w: not bound to a pod (no kubernetes.io.pod claim): mount it as a projected serviceAccountToken volume", ErrNodeTokenPod)
	}
	nc.PodUID = c.K.Pod.UID
	if c.K.Node != nil {
		nc.NodeName = c.K.Node.Name
	}
	return nc, nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = spec.Quote(s)
	}
	return "[" + strings.Join(q, " ") + "]"
}
