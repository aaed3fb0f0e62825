package spec

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Key Vault's own naming rules, so that a typo is a denial at admission
// rather than a 404 or a 400 at pod start.
const (
	maxSecretNameLength = 127
	versionLength       = 32
	minVaultNameLength  = 3
	maxVaultNameLength  = 24
	maxPathLength       = 256
)

// ParseVault turns a vault name (homelab-kv) or URL
// (https://homelab-kv.vault.azure.net) into the vault's normalised URL.
func ParseVault(s string, cloud Cloud) (string, error) {
	if !strings.Contains(s, "/") && !strings.Contains(s, ":") {
		if err := validateVaultName(s); err != nil {
			return "", err
		}
		return "https://" + strings.ToLower(s) + "." + cloud.VaultSuffix, nil
	}
	return parseVaultURL(s, cloud.VaultSuffix)
}

// parseVaultURL checks a vault URL; an empty suffix accepts any host whose
// first label is a vault name (the agent's check of a spec, whatever the cloud).
func parseVaultURL(s, suffix string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("vault %s is not a URL", Quote(s))
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("vault %s must be an https:// URL or a vault name", Quote(s))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") || u.Port() != "" {
		return "", fmt.Errorf("vault %s must be just https://NAME.%s", Quote(s), displaySuffix(suffix))
	}
	host := strings.ToLower(u.Hostname())
	name, rest, _ := strings.Cut(host, ".")
	if rest == "" || (suffix != "" && rest != suffix) {
		return "", fmt.Errorf("vault %s is not a Key Vault host: want https://NAME.%s", Quote(s), displaySuffix(suffix))
	}
	if err := validateVaultName(name); err != nil {
		return "", err
	}
	return "https://" + host, nil
}

func displaySuffix(suffix string) string {
	if suffix == "" {
		return "vault.azure.net"
	}
	return suffix
}

// validateVaultName applies Key Vault's rule: 3-24 characters of letters,
// digits and hyphens, starting with a letter, ending with a letter or digit,
// no two hyphens in a row.
func validateVaultName(n string) error {
	bad := len(n) < minVaultNameLength || len(n) > maxVaultNameLength || !isLetter(n[0]) ||
		n[len(n)-1] == '-' || strings.Contains(n, "--")
	for i := 0; i < len(n) && !bad; i++ {
		bad = !isLetter(n[i]) && !isDigit(n[i]) && n[i] != '-'
	}
	if bad {
		return fmt.Errorf("vault name %s is not valid: 3-24 letters, digits and hyphens, starting with a letter", Quote(n))
	}
	return nil
}

func validateSecretName(n string) error {
	bad := n == "" || len(n) > maxSecretNameLength
	for i := 0; i < len(n) && !bad; i++ {
		bad = !isLetter(n[i]) && !isDigit(n[i]) && n[i] != '-'
	}
	if bad {
		return fmt.Errorf("secret name %s is not valid: 1-127 letters, digits and hyphens", Quote(n))
	}
	return nil
}

func validateVersion(v string) error {
	bad := len(v) != versionLength
	for i := 0; i < len(v) && !bad; i++ {
		bad = !isDigit(v[i]) && !('a' <= v[i] && v[i] <= 'f') && !('A' <= v[i] && v[i] <= 'F')
	}
	if bad {
		return fmt.Errorf("secret version %s is not valid: 32 hexadecimal digits", Quote(v))
	}
	return nil
}

// ErrNoVault is returned by ParseRef for a short reference without a default vault.
var ErrNoVault = errors.New("no vault")

// ParseRef parses `<name>[/<version>][#<path>]`, read from defaultVault, or
// `https://<vault-host>/secrets/<name>[/<version>][#<path>]`.
func ParseRef(s, defaultVault string, cloud Cloud) (Ref, error) {
	if strings.TrimSpace(s) != s || s == "" {
		return Ref{}, fmt.Errorf("reference %s must be <name>[/<version>][#<path>] or a secret URL, without spaces", Quote(s))
	}
	body, p, hasPath := strings.Cut(s, "#")
	if hasPath {
		if _, err := SplitPath(p); err != nil {
			return Ref{}, err
		}
	}
	var r Ref
	if strings.Contains(body, "://") {
		u, err := url.Parse(body)
		if err != nil {
			return Ref{}, fmt.Errorf("reference %s is not a secret URL", Quote(s))
		}
		vault, err := parseVaultURL(u.Scheme+"://"+u.Host, cloud.VaultSuffix)
		if err != nil {
			return Ref{}, fmt.Errorf("reference %s: %w", Quote(s), err)
		}
		rest, ok := strings.CutPrefix(u.EscapedPath(), "/secrets/")
		if !ok || u.RawQuery != "" {
			return Ref{}, fmt.Errorf("reference %s: a secret URL is https://<vault-host>/secrets/<name>[/<version>]", Quote(s))
		}
		r.Vault, body = vault, strings.TrimSuffix(rest, "/")
	} else {
		if defaultVault == "" {
			return Ref{}, fmt.Errorf("reference %s names no vault: set %s or use a secret URL: %w", Quote(s), AnnotationVault, ErrNoVault)
		}
		r.Vault = defaultVault
	}
	name, version, hasVersion := strings.Cut(body, "/")
	if err := validateSecretName(name); err != nil {
		return Ref{}, fmt.Errorf("reference %s: %w", Quote(s), err)
	}
	if hasVersion {
		if err := validateVersion(version); err != nil {
			return Ref{}, fmt.Errorf("reference %s: %w", Quote(s), err)
		}
	}
	r.Name, r.Version = name, strings.ToLower(version)
	if hasPath {
		r.Path = p
	}
	return r, nil
}

// SplitPath splits a dot path (`username`, `db.password`, `hosts.0`) into its
// keys; an array element is selected by its index.
func SplitPath(p string) ([]string, error) {
	if p == "" || len(p) > maxPathLength {
		return nil, fmt.Errorf("property path %s must be 1-%d characters, like username or db.hosts.0", Quote(p), maxPathLength)
	}
	keys := strings.Split(p, ".")
	for _, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("property path %s has an empty key: separate keys with single dots, like db.password", Quote(p))
		}
	}
	return keys, nil
}

// ValidateFileName checks a file name: 1 to 50 characters of [A-Za-z0-9._-],
// not . or .., so it can never leave the mount.
func ValidateFileName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("file name is empty: use 1-%d characters of letters, digits, '.', '_' and '-'", MaxFileNameLength)
	case len(n) > MaxFileNameLength:
		return fmt.Errorf("file name %s is %d characters: at most %d", Quote(n), len(n), MaxFileNameLength)
	case n == "." || n == "..":
		return fmt.Errorf("file name %s is not allowed", Quote(n))
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !isLetter(c) && !isDigit(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("file name %s has %q: use letters, digits, '.', '_' and '-' only", Quote(n), string(rune(c)))
		}
	}
	if strings.HasPrefix(n, "..") {
		// ..data and ..kvinject_* are the agent's (like the kubelet's AtomicWriter).
		return fmt.Errorf("file name %s starts with \"..\", which is reserved for the agent's atomic update", Quote(n))
	}
	if n == EnvFileName {
		return fmt.Errorf("file name %s is reserved for the environment variables of %sVAR annotations", Quote(n), AnnotationEnvPrefix)
	}
	return nil
}

// ValidateEnvName accepts a C identifier, the names a shell and the
// kubelet's env file take.
func ValidateEnvName(n string) error {
	ok := n != "" && len(n) <= MaxEnvNameLength && !isDigit(n[0])
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		ok = isLetter(c) || isDigit(c) || c == '_'
	}
	if !ok {
		return fmt.Errorf("variable name %s is not a C identifier: 1-%d letters, digits and '_', not starting with a digit", Quote(n), MaxEnvNameLength)
	}
	return nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
