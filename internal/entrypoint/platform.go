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

// maxPlatformPart bounds one part of a platform: OCI's are a few bytes.
const maxPlatformPart = 32

// maxQuotedPlatform is the longest platform an error quotes back: longer than
// any real one ("linux/arm64/v8"), short enough that escaped bytes stay a line.
const maxQuotedPlatform = 40

// quotePlatform quotes what the user gave as a platform when it is short
// enough to be one, and says its length otherwise: an error names the value,
// it does not echo it.
func quotePlatform(s string) string {
	if len(s) > maxQuotedPlatform {
		return fmt.Sprintf("of %d bytes", len(s))
	}
	return spec.Quote(s)
}

// ParsePlatform reads os/arch[/variant] ("linux/amd64", "linux/arm/v7").
// Each part is lower-case letters, digits, '_' or '-', at most 32 bytes.
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("platform %s: want os/arch[/variant], like linux/amd64 or linux/arm/v7", quotePlatform(s))
	}
	for _, p := range parts {
		if len(p) > maxPlatformPart {
			// Not quoted: the message names the part, it does not echo it.
			return Platform{}, fmt.Errorf("platform: a part of %d bytes, longer than any platform's (%d); want os/arch[/variant], like linux/amd64", len(p), maxPlatformPart)
		}
		if p == "" || strings.TrimLeft(p, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
			return Platform{}, fmt.Errorf("platform part %s is not lower-case letters, digits, '_' and '-'; want os/arch[/variant], like linux/amd64", spec.Quote(p))
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
