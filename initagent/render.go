package initagent

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"text/template"

	"github.com/kvinject/kvinject/internal/spec"
)

// MaxRenderedSize bounds a rendered template, so a runaway range cannot fill
// the pod's memory.
const MaxRenderedSize = 1 << 20

// RenderError says why a template did not render. Like spec.TemplateError it
// locates the problem by line and column and never quotes the template or a
// value: text/template's own messages can quote both.
type RenderError struct {
	Line, Col int
	Problem   string
	Fix       string
	// Ref is set when the problem is a secret reference's value.
	Ref *spec.Ref
}

func (e *RenderError) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Problem)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Problem)
	}
	return e.Problem
}

// lookupError carries a reference's problem out of text/template, which
// wraps function errors with %w.
type lookupError struct {
	ref spec.Ref
	err error
}

func (e *lookupError) Error() string { return e.err.Error() }
func (e *lookupError) Unwrap() error { return e.err }

// execErrPos finds "NAME:LINE:COL:" at the start of a text/template error;
// NAME is a file name, which has no colon.
var execErrPos = regexp.MustCompile(`^template: [^:]*:(\d+)(?::(\d+))?:`)

// Render executes a template file. lookup returns what `secret "<ref>"`
// gives for a reference of f.Refs (its value or property).
func Render(f spec.File, lookup func(spec.Ref) ([]byte, error)) ([]byte, error) {
	secret := func(arg string) (string, error) {
		r, ok := f.Refs[arg]
		if !ok {
			return "", &lookupError{err: errors.New("the reference is not in the spec's refs: the spec was not built by the webhook")}
		}
		v, err := lookup(r)
		if err != nil {
			return "", &lookupError{ref: r, err: err}
		}
		return string(v), nil
	}
	t, err := template.New(f.Name).Option("missingkey=error").Funcs(spec.TemplateFuncs(secret)).Parse(f.Template)
	if err != nil {
		line, col := errPos(err)
		return nil, &RenderError{Line: line, Col: col, Problem: "the template does not parse", Fix: "fix the template annotation"}
	}
	var out limitedBuffer
	if err := t.Execute(&out, nil); err != nil {
		line, col := errPos(err)
		var le *lookupError
		var pe *PropertyError
		switch {
		case errors.As(err, &pe):
			return nil, &RenderError{Line: line, Col: col, Problem: pe.Problem, Fix: pe.Fix, Ref: refOf(err)}
		case errors.As(err, &le):
			return nil, &RenderError{Line: line, Col: col, Problem: le.err.Error(), Ref: refOf(err)}
		case errors.Is(err, errTooLarge):
			return nil, &RenderError{Problem: fmt.Sprintf("the rendered file exceeds %d bytes", MaxRenderedSize), Fix: "make the template produce less output"}
		}
		return nil, &RenderError{Line: line, Col: col,
			Problem: "the template fails to execute",
			Fix:     "check the function and its arguments at that position (a missing key, a wrong argument type, or b64dec of a value that is not base64)"}
	}
	return out.Bytes(), nil
}

func refOf(err error) *spec.Ref {
	var le *lookupError
	if errors.As(err, &le) && le.ref.Name != "" {
		r := le.ref
		return &r
	}
	return nil
}

func errPos(err error) (line, col int) {
	if m := execErrPos.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		if m[2] != "" {
			col, _ = strconv.Atoi(m[2])
		}
	}
	return line, col
}

var errTooLarge = errors.New("rendered output too large")

type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxRenderedSize {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}
