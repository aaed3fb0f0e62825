package credprovider

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
)

// The kubelet's name for Docker Hub in credentials: an entry for
// https://index.docker.io/v1/ serves docker.io images
// (pkg/credentialprovider keyring.go, defaultRegistryHost).
const dockerHubHost = "index.docker.io"

// location is an image or a credential key the way the kubelet compares
// them (pkg/credentialprovider URLsMatch): host labels, port and path.
type location struct {
	labels []string // host split at dots; a key's may hold globs
	port   string
	path   string // "" or starting with "/"
}

// parseLocation reads a schemeless host[:port][/path], as the kubelet's
// ParseSchemelessURL does.
func parseLocation(s string) (location, error) {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return location{}, fmt.Errorf("%q is not a registry host[:port][/path]: use printable ASCII", s)
		}
	}
	u, err := url.Parse("https://" + s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return location{}, fmt.Errorf("%q is not a registry host[:port][/path]", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return location{labels: strings.Split(host, "."), port: port, path: u.Path}, nil
}

func (l location) host() string {
	h := strings.Join(l.labels, ".")
	if l.port != "" {
		h = net.JoinHostPort(h, l.port)
	}
	return h
}

// hostMatches is the kubelet's match of a key's host and port against a
// target's: the same port, the same number of labels, each label matching
// as a glob ('*' never crosses a dot).
func (key location) hostMatches(target location) bool {
	if key.port != target.port || len(key.labels) != len(target.labels) {
		return false
	}
	for i, glob := range key.labels {
		if ok, err := path.Match(glob, target.labels[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

// matches is the kubelet's full match: host and port, and the key's path a
// prefix of the target's (a plain string prefix, as the kubelet compares).
func (key location) matches(target location) bool {
	return key.hostMatches(target) && strings.HasPrefix(target.path, key.path)
}

// Image is the image of a request: its registry and repository.
type Image struct {
	// Registry is host[:port] (docker.io for Docker Hub): the kubelet's
	// cache key for CacheKeyRegistry, the text before the first slash.
	Registry string
	loc      location
}

// ParseImage reads an image as the kubelet passes it: a repository without
// tag or digest, normalised (docker.io/library/nginx). A tag or digest, or
// a short Docker Hub name, is accepted too.
func ParseImage(image string) (Image, error) {
	repo := image
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		if strings.Contains(repo, "/") || !isPort(repo[i+1:]) {
			repo = repo[:i]
		}
	}
	first, rest, hasSlash := strings.Cut(repo, "/")
	switch {
	case !hasSlash:
		repo = "docker.io/library/" + repo
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		repo = "docker.io/" + repo
	case first == dockerHubHost:
		repo = "docker.io/" + rest
	}
	loc, err := parseLocation(repo)
	if err != nil || strings.Contains(loc.host(), "*") {
		return Image{}, fmt.Errorf("image %q is not an image name", image)
	}
	registry, _, _ := strings.Cut(repo, "/")
	return Image{Registry: registry, loc: loc}, nil
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (im Image) onDockerHub() bool { return im.Registry == "docker.io" }

// normalizeKey turns a dockerconfigjson key into the kubelet's form
// (keyring.go BasicDockerKeyring.Add): no scheme, /v1/ and /v2/ dropped,
// the host alone when no path is left.
func normalizeKey(key string) (string, location, error) {
	if _, err := parseLocation(strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")); err != nil {
		return "", location{}, fmt.Errorf("key %q is not a registry", key)
	}
	raw := key
	if !strings.HasPrefix(raw, "https://") && !strings.HasPrefix(raw, "http://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", location{}, fmt.Errorf("key %q is not a registry", key)
	}
	p := u.Path
	if strings.HasPrefix(p, "/v2/") || strings.HasPrefix(p, "/v1/") {
		p = p[3:]
	}
	norm := u.Host
	if p != "" && p != "/" {
		norm += p
	}
	loc, err := parseLocation(norm)
	if err != nil {
		return "", location{}, fmt.Errorf("key %q is not a registry", key)
	}
	return norm, loc, nil
}

// MatchImage is an entry of the provider's matchImages (the kubelet's
// config), parsed.
type MatchImage struct {
	Pattern string
	loc     location
}

// ParseMatchImages reads matchImages entries: host[:port][/path], '*'
// globs in host labels.
func ParseMatchImages(patterns []string) ([]MatchImage, error) {
	out := make([]MatchImage, 0, len(patterns))
	for _, p := range patterns {
		if strings.Contains(p, "://") {
			return nil, fmt.Errorf("%q: no scheme, just host[:port][/path]", p)
		}
		loc, err := parseLocation(p)
		if err != nil {
			return nil, err
		}
		out = append(out, MatchImage{Pattern: p, loc: loc})
	}
	return out, nil
}

// glob says whether the entry's host holds a pattern (path.Match's
// '*', '?' or '['), which the kubelet matches as a glob.
func (m MatchImage) glob() bool {
	for _, l := range m.loc.labels {
		if strings.ContainsAny(l, `*?[\`) {
			return true
		}
	}
	return false
}

// namedRegistry says whether an entry without a glob matches the image:
// the operator named its registry. Otherwise it returns the first glob
// entry that matches it, if any.
func namedRegistry(im Image, entries []MatchImage) (named bool, glob string) {
	for _, m := range entries {
		if !m.loc.matches(im.loc) {
			continue
		}
		if !m.glob() {
			return true, ""
		}
		if glob == "" {
			glob = m.Pattern
		}
	}
	return false, glob
}
