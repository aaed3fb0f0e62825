package credprovider

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Bounds on a Key Vault value (Key Vault itself stops at 25 KB).
const (
	MaxValueBytes = 64 << 10
	maxEntries    = 1000
	// maxListedHosts bounds the registries a diagnostic names.
	maxListedHosts = 10
)

// Credential is a registry credential read from Key Vault: the entries of
// a dockerconfigjson, or one username and password for whatever registry
// the image is on.
type Credential struct {
	// Entries are a dockerconfigjson's, by the kubelet's normalised key;
	// nil for the other forms.
	Entries map[string]AuthConfig
	// Any is the credential of the user:password and JSON forms.
	Any *AuthConfig
}

// ErrCredential marks a value that is not a credential this provider reads.
// The errors say which form was expected and never quote the value.
var ErrCredential = errors.New("not a registry credential")

// ParseCredential reads a Key Vault value: a dockerconfigjson
// ({"auths":{"HOST":{"auth":"base64(user:password)"}}} or with "username" and
// "password"), JSON {"username","password"}, or user:password.
func ParseCredential(value string) (Credential, error) {
	if len(value) > MaxValueBytes {
		return Credential{}, fmt.Errorf("%w: the value is %d bytes, more than %d", ErrCredential, len(value), MaxValueBytes)
	}
	trimmed := bytes.TrimSpace([]byte(value))
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return parseJSONCredential(trimmed)
	}
	// A value set from a file often ends with a line break: not part of
	// the password.
	line := strings.TrimRight(value, "\r\n")
	user, password, ok := strings.Cut(line, ":")
	if !ok || strings.ContainsAny(line, "\r\n") || user == "" {
		return Credential{}, fmt.Errorf("%w: the value (%d bytes) is neither JSON nor one line user:password", ErrCredential, len(value))
	}
	a := AuthConfig{Username: user, Password: password}
	if !a.isText() {
		return Credential{}, fmt.Errorf("%w: %w", ErrCredential, errTextOnly)
	}
	return Credential{Any: &a}, nil
}

// errTextOnly: the response is JSON, which would turn bytes that are not
// UTF-8 into U+FFFD, and the registry would get another password.
var errTextOnly = errors.New("the username and password must be UTF-8 text")

func (a AuthConfig) isText() bool {
	return utf8.ValidString(a.Username) && utf8.ValidString(a.Password)
}

// dockerEntry is one entry of a dockerconfigjson's auths.
type dockerEntry struct {
	Auth     string `json:"auth"`
	Username string `json:"username"`
	Password string `json:"password"`
}

func parseJSONCredential(data []byte) (Credential, error) {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return Credential{}, fmt.Errorf("%w: the value starts like JSON but is not a JSON object (%d bytes)", ErrCredential, len(data))
	}
	if raw, ok := top["auths"]; ok {
		return parseDockerConfig(raw)
	}
	_, hasUser := top["username"]
	_, hasPassword := top["password"]
	if !hasUser || !hasPassword {
		return Credential{}, fmt.Errorf("%w: a JSON value must be a dockerconfigjson {\"auths\":{...}} or {\"username\":...,\"password\":...} (it has %d keys, neither \"auths\" nor both \"username\" and \"password\")",
			ErrCredential, len(top))
	}
	var a AuthConfig
	if json.Unmarshal(top["username"], &a.Username) != nil || json.Unmarshal(top["password"], &a.Password) != nil {
		return Credential{}, fmt.Errorf("%w: \"username\" and \"password\" must be JSON strings", ErrCredential)
	}
	return Credential{Any: &a}, nil
}

func parseDockerConfig(raw json.RawMessage) (Credential, error) {
	var auths map[string]json.RawMessage
	if json.Unmarshal(raw, &auths) != nil {
		return Credential{}, fmt.Errorf("%w: \"auths\" must be an object of registry entries", ErrCredential)
	}
	if len(auths) == 0 {
		return Credential{}, fmt.Errorf("%w: the dockerconfigjson has no entry in \"auths\"", ErrCredential)
	}
	if len(auths) > maxEntries {
		return Credential{}, fmt.Errorf("%w: the dockerconfigjson has %d entries, more than %d", ErrCredential, len(auths), maxEntries)
	}
	keys := make([]string, 0, len(auths))
	for k := range auths {
		keys = append(keys, k)
	}
	// Keys that differ only by scheme or /v1/ are one registry to the
	// kubelet: the first in key order wins, whatever the map's order.
	sort.Strings(keys)
	entries := make(map[string]AuthConfig, len(auths))
	for _, key := range keys {
		norm, _, err := normalizeKey(key)
		if err != nil {
			return Credential{}, fmt.Errorf("%w: in the dockerconfigjson, %w", ErrCredential, err)
		}
		if _, dup := entries[norm]; dup {
			continue
		}
		var e dockerEntry
		if json.Unmarshal(auths[key], &e) != nil {
			return Credential{}, fmt.Errorf("%w: the dockerconfigjson entry %q must be an object with \"auth\" or \"username\" and \"password\" strings", ErrCredential, norm)
		}
		a, err := e.credential()
		if err == nil && !a.isText() {
			err = errTextOnly
		}
		if err != nil {
			return Credential{}, fmt.Errorf("%w: the dockerconfigjson entry %q: %w", ErrCredential, norm, err)
		}
		entries[norm] = a
	}
	return Credential{Entries: entries}, nil
}

// credential decodes an entry as the kubelet does (DockerConfigEntry
// UnmarshalJSON): "auth", when present, is base64 of user:password, padded
// or not, and overrides "username" and "password".
func (e dockerEntry) credential() (AuthConfig, error) {
	if e.Auth == "" {
		if e.Username == "" && e.Password == "" {
			return AuthConfig{}, errors.New("no \"auth\", \"username\" or \"password\"")
		}
		return AuthConfig{Username: e.Username, Password: e.Password}, nil
	}
	enc := base64.RawStdEncoding
	if strings.HasSuffix(strings.TrimSpace(e.Auth), "=") {
		enc = base64.StdEncoding
	}
	decoded, err := enc.DecodeString(e.Auth)
	if err != nil {
		return AuthConfig{}, errors.New("\"auth\" is not base64")
	}
	user, password, ok := strings.Cut(string(decoded), ":")
	if !ok {
		return AuthConfig{}, errors.New("\"auth\" is not base64 of user:password")
	}
	return AuthConfig{Username: user, Password: password}, nil
}

// NoEntryError says the dockerconfigjson has no entry for the image. It
// names registry hosts only.
type NoEntryError struct {
	Registry string
	// Hosts are the registries the dockerconfigjson has entries for.
	Hosts []string
	// OtherPaths is true when entries for the registry exist, but for
	// other repository paths.
	OtherPaths bool
}

func (e *NoEntryError) Error() string {
	if e.OtherPaths {
		return fmt.Sprintf("the dockerconfigjson has entries for %s, but for other repository paths than the image's", e.Registry)
	}
	return fmt.Sprintf("the dockerconfigjson has no entry for %s (it has %s)", e.Registry, strings.Join(e.Hosts, ", "))
}

// Auth returns what the response carries for the image: the credential's
// entries that can match an image of its registry (host and port), each
// under its own key, so that the kubelet, which caches the answer per
// registry (CacheKeyRegistry), picks from the cache the same entry for
// any repository of that registry as a fresh answer would give. The
// user:password and JSON forms answer for the image's registry.
func (c Credential) Auth(im Image) (map[string]AuthConfig, error) {
	if c.Any != nil {
		return map[string]AuthConfig{im.Registry: *c.Any}, nil
	}
	out := map[string]AuthConfig{}
	matched := false
	for key, a := range c.Entries {
		_, loc, err := normalizeKey(key)
		if err != nil {
			continue // ParseCredential normalised every key
		}
		// The kubelet serves docker.io images with an index.docker.io
		// entry when nothing else matches (isDefaultRegistryMatch).
		hub := im.onDockerHub() && key == dockerHubHost
		if loc.hostMatches(im.loc) || hub {
			out[key] = a
			matched = matched || loc.matches(im.loc) || hub
		}
	}
	if !matched {
		return nil, &NoEntryError{Registry: im.Registry, Hosts: c.hosts(), OtherPaths: len(out) > 0}
	}
	return out, nil
}

// hosts lists the registry hosts of the entries, sorted, at most
// maxListedHosts.
func (c Credential) hosts() []string {
	seen := map[string]bool{}
	for key := range c.Entries {
		if _, loc, err := normalizeKey(key); err == nil {
			seen[loc.host()] = true
		}
	}
	hosts := make([]string, 0, len(seen))
	for h := range seen {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	if len(hosts) > maxListedHosts {
		hosts = append(hosts[:maxListedHosts], fmt.Sprintf("and %d more", len(seen)-maxListedHosts))
	}
	return hosts
}
