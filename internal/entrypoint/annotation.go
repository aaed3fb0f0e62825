package entrypoint

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/kvinject/kvinject/internal/spec"
)

// AnnotationPrefix + container name: the pod annotation holding, as a JSON
// array of strings, the program the exec wrapper runs for that container
// when it has no command.
const AnnotationPrefix = spec.AnnotationEntrypointPrefix

// Annotation is the entrypoint annotation for one container.
type Annotation struct {
	Request
	// Container is the container the annotation is for (Request.Container,
	// or the last path element of the image's repository).
	Container string
	// Program is the image's ENTRYPOINT, followed by its CMD unless
	// Request.EntrypointOnly.
	Program []string
	// Platform is the platform whose image config was read, and Digest
	// that image's manifest digest.
	Platform string
	Digest   string
}

// Key is the annotation's key.
func (a Annotation) Key() string { return AnnotationPrefix + a.Container }

// Value is the annotation's value: Program as a JSON array.
func (a Annotation) Value() string { return EncodeProgram(a.Program) }

// Line is the annotation as one line of YAML, ready to paste under
// metadata.annotations.
func (a Annotation) Line() string { return a.Key() + ": " + QuoteYAML(a.Value()) }

// EncodeProgram writes args as a compact JSON array of strings. Beside
// what JSON requires, it escapes every character YAML does not allow in a
// scalar (DEL, C1 controls, U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF), so the
// value survives any YAML or JSON file it is pasted into, on one line.
func EncodeProgram(args []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, a := range args {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, a)
	}
	b.WriteByte(']')
	return b.String()
}

func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, string(utf8.RuneError)) {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff, r == 0xfffe, r == 0xffff:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// QuoteYAML quotes s as a single-quoted YAML scalar, which takes every
// printable character literally (a quote doubled being one quote). s must hold no
// character YAML forbids, as EncodeProgram's output never does.
func QuoteYAML(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
