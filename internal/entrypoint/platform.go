package entrypoint

import (
	"fmt"
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
)

// DefaultPlatform is the platform read from a multi-platform image when
// Options name none.
const DefaultPlatform = "linux/amd64"

// Platform is an image platform: os/arch[/variant], as the OCI image index
// and `docker --platform` spell it.
type Platform struct {
	OS, Arch, Variant string
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// archAliases are the names uname and distributions use for what OCI
// calls amd64 and arm64.
var archAliases = map[string]string{"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}

// ParsePlatform reads os/arch[/variant] ("linux/amd64", "linux/arm/v7").
// Each part is lower-case letters, digits, '_' or '-', at most 32 bytes.
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("platform %s: want os/arch[/variant], like linux/amd64 or linux/arm/v7", spec.Quote(s))
	}
	for _, p := range parts {
		if p == "" || len(p) > 32 || strings.TrimLeft(p, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
			return Platform{}, fmt.Errorf("platform %s: %s is not a platform part (lower-case letters, digits, '_', '-')", spec.Quote(s), spec.Quote(p))
		}
	}
	p := Platform{OS: parts[0], Arch: parts[1]}
	if a, ok := archAliases[p.Arch]; ok {
		p.Arch = a
	}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// normalVariant is the variant as indexes write it: arm64's v8 is usually
// left out.
func normalVariant(arch, variant string) string {
	if arch == "arm64" && variant == "v8" {
		return ""
	}
	return variant
}

// matches says whether an index entry's platform is the one asked for: the
// same OS and architecture, and the variant when one is asked for.
func (want Platform) matches(got Platform) bool {
	if want.OS != got.OS || want.Arch != got.Arch {
		return false
	}
	return want.Variant == "" || normalVariant(want.Arch, want.Variant) == normalVariant(got.Arch, got.Variant)
}
