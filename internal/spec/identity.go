package spec

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidateClientID accepts a client id as Entra ID writes it: a GUID.
func ValidateClientID(s string) error {
	const form = "8-4-4-4-12 hexadecimal digits"
	parts := strings.Split(s, "-")
	lens := []int{8, 4, 4, 4, 12}
	if len(parts) != len(lens) {
		return fmt.Errorf("%s is not a GUID (%s)", Quote(s), form)
	}
	for i, p := range parts {
		if len(p) != lens[i] {
			return fmt.Errorf("%s is not a GUID (%s)", Quote(s), form)
		}
		for j := 0; j < len(p); j++ {
			if !isHex(p[j]) {
				return fmt.Errorf("%s is not a GUID (%s)", Quote(s), form)
			}
		}
	}
	return nil
}

// ValidateTenantID accepts what Entra ID does: a GUID or a domain name.
func ValidateTenantID(s string) error {
	if s == "" || len(s) > 253 {
		return errors.New("tenant id is empty or too long")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isHex(c) && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') && c != '-' && c != '.' {
			return fmt.Errorf("%s is not a tenant id (a GUID or a domain name)", Quote(s))
		}
	}
	return nil
}

// ValidateMountPath accepts where the files may appear: a clean absolute
// path other than /, without a colon (the kubelet's mount syntax).
func ValidateMountPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" || strings.Contains(p, ":") {
		return fmt.Errorf("%s must be a clean absolute path other than /, like %s", Quote(p), DefaultMountPath)
	}
	// The pod and the agent's spec travel as JSON, which turns invalid
	// UTF-8 into U+FFFD: the app would mount one path and the agent's spec
	// name another.
	if !utf8.ValidString(p) || strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return fmt.Errorf("%s must be printable UTF-8, like %s", Quote(p), DefaultMountPath)
	}
	// The agent mounts its token at these paths: the files' volume on, above
	// or below one would hide the token or put the token's mount point into
	// the files.
	for _, token := range []string{TokenMountPath, APITokenMountPath} {
		if p == token || within(token, p) || within(p, token) {
			return fmt.Errorf("%s overlaps %s, where kvinject mounts the agent's token: choose a path outside it, like %s", Quote(p), token, DefaultMountPath)
		}
	}
	return nil
}

// within says whether clean absolute path p lies below dir.
func within(p, dir string) bool {
	return strings.HasPrefix(p, dir+"/")
}

// ValidateTokenExpiration accepts a projected token lifetime in seconds.
func ValidateTokenExpiration(seconds int64) error {
	if seconds < MinTokenExpirationSeconds || seconds > MaxTokenExpirationSeconds {
		return fmt.Errorf("%d seconds: want %d to %d", seconds, MinTokenExpirationSeconds, MaxTokenExpirationSeconds)
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
