package secretform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"github.com/kvinject/kvinject/internal/spec"
)

// MaxRenderedSize bounds a rendered template.
const MaxRenderedSize = 1 << 20

// MaxRenderWork bounds the bytes the functions of one template may produce
// in all, values from secret included: a variable doubled with printf
// "%s%s" over and over stops here, long before the agent's 64Mi limit.
const MaxRenderWork = 16 << 20

// RenderError says why a template did not render. Like spec.TemplateError it
// locates the problem by line and column and never quotes the template or a
// value: text/template's own messages can quote both.
type RenderError struct {
	Line, Col int
	Problem   string
	Detail    string // for the container log only (Problem.Detail)
	Fix       string
	// Ref is set when the problem is a secret reference's value.
	Ref *spec.Ref
	// lookup is the reference's error, when there is one.
	lookup error
}

func (e *RenderError) Unwrap() error { return e.lookup }

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
// gives for a reference of f.Refs (its value or property). The template is
// checked as at admission (spec.CheckTemplate: no range, no recursion, a
// bounded number of steps), and while it runs every function call and
// every write checks ctx and the byte budget, so it ends by the deadline
// and within MaxRenderWork.
func Render(ctx context.Context, f spec.File, lookup func(spec.Ref) ([]byte, error)) ([]byte, error) {
	if err := spec.CheckTemplate(f.Template); err != nil {
		var te *spec.TemplateError
		if errors.As(err, &te) {
			return nil, &RenderError{Line: te.Line, Col: te.Col, Problem: te.Problem, Fix: "fix the template annotation"}
		}
		return nil, &RenderError{Problem: "the template does not parse", Fix: "fix the template annotation"}
	}
	b := &renderBudget{ctx: ctx, left: MaxRenderWork}
	secret := func(arg string) (string, error) {
		r, ok := f.Refs[arg]
		if !ok {
			return "", &lookupError{err: errors.New("the reference is not in the spec's refs: the spec was not built by the webhook")}
		}
		v, err := lookup(r)
		if err != nil {
			return "", &lookupError{ref: r, err: err}
		}
		if err := b.take(len(v)); err != nil {
			return "", err
		}
		return string(v), nil
	}
	t, err := template.New(f.Name).Option("missingkey=error").Funcs(b.funcs(secret)).Parse(f.Template)
	if err != nil {
		line, col := errPos(err)
		return nil, &RenderError{Line: line, Col: col, Problem: "the template does not parse", Fix: "fix the template annotation"}
	}
	out := limitedBuffer{ctx: ctx}
	if err := t.Execute(&out, nil); err != nil {
		line, col := errPos(err)
		var le *lookupError
		var pe *PropertyError
		var cause error
		if errors.As(err, &le) {
			cause = le.err
		}
		switch {
		case errors.As(err, &pe):
			return nil, &RenderError{Line: line, Col: col, Problem: pe.Problem, Detail: pe.Detail, Fix: pe.Fix, Ref: refOf(err), lookup: cause}
		case le != nil:
			return nil, &RenderError{Line: line, Col: col, Problem: le.err.Error(), Ref: refOf(err), lookup: cause}
		case errors.Is(err, errTooLarge):
			return nil, &RenderError{Problem: fmt.Sprintf("the rendered file exceeds %d bytes", MaxRenderedSize), Fix: "make the template produce less output"}
		case errors.Is(err, errTooMuchWork):
			return nil, &RenderError{Line: line, Col: col, Problem: fmt.Sprintf("the template's functions produce more than %d bytes in all", MaxRenderWork), Fix: "make the template build smaller values"}
		case errors.Is(err, errStarWidth):
			return nil, &RenderError{Line: line, Col: col, Problem: "printf takes no width or precision from an argument (*)", Fix: "write the width as a number in the format"}
		case ctx.Err() != nil:
			return nil, &RenderError{Line: line, Col: col, Problem: "the template did not finish before the agent's deadline", Fix: "make the template do less"}
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

var (
	errTooLarge    = errors.New("rendered output too large")
	errTooMuchWork = errors.New("template functions produced too many bytes")
	errStarWidth   = errors.New("printf width from an argument")
)

// limitedBuffer is the template's output: bounded, and a point where a
// running template notices its deadline.
type limitedBuffer struct {
	bytes.Buffer
	ctx context.Context
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.Len()+len(p) > MaxRenderedSize {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}

// renderBudget is what one template may still do: every function that
// builds a string takes the most it could produce from left before it runs,
// and every call checks the deadline.
type renderBudget struct {
	ctx  context.Context
	left int
}

func (b *renderBudget) take(n int) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if n < 0 || n > b.left {
		b.left = 0
		return errTooMuchWork
	}
	b.left -= n
	return nil
}

// funcs are spec.TemplateFuncs and the text/template builtins that build
// strings, each charged to the budget before it runs: fmt builds a whole
// "%999999999s" in memory before anything could stop it.
func (b *renderBudget) funcs(secret func(string) (string, error)) template.FuncMap {
	m := spec.TemplateFuncs(secret)
	for name, grow := range map[string]int{"b64enc": 2, "b64dec": 1, "trim": 0, "upper": 3, "lower": 3, "quote": 4} {
		f := m[name]
		m[name] = func(s string) (string, error) {
			if err := b.take(grow*len(s) + 4); err != nil {
				return "", err
			}
			switch f := f.(type) {
			case func(string) string:
				return f(s), nil
			case func(string) (string, error):
				return f(s)
			}
			panic("kvinject: template function " + name + " has an unexpected type")
		}
	}
	// Escapers: HTML and JS write at most 6 bytes per input byte, URL 3.
	for name, esc := range map[string]struct {
		grow int
		f    func(...any) string
	}{"html": {6, template.HTMLEscaper}, "js": {6, template.JSEscaper}, "urlquery": {3, template.URLQueryEscaper}} {
		m[name] = func(args ...any) (string, error) {
			if err := b.take(esc.grow * printSize(args)); err != nil {
				return "", err
			}
			return esc.f(args...), nil
		}
	}
	m["print"] = func(args ...any) (string, error) {
		if err := b.take(printSize(args)); err != nil {
			return "", err
		}
		return fmt.Sprint(args...), nil
	}
	m["println"] = func(args ...any) (string, error) {
		if err := b.take(printSize(args) + 1); err != nil {
			return "", err
		}
		return fmt.Sprintln(args...), nil
	}
	m["printf"] = func(format string, args ...any) (string, error) {
		n, err := printfSize(format, args)
		if err == nil {
			err = b.take(n)
		}
		if err != nil {
			return "", err
		}
		return fmt.Sprintf(format, args...), nil
	}
	return m
}

// argSize bounds what fmt prints for one template value: strings are as
// long as they are; the rest are numbers, booleans and nil, which a float
// such as 1e308 printed with %f takes most room for.
func argSize(a any) int {
	if s, ok := a.(string); ok {
		return len(s)
	}
	return 400
}

// printSize bounds fmt.Sprint and friends: every argument and a separator.
func printSize(args []any) int {
	n := 0
	for _, a := range args {
		n += argSize(a) + 1
	}
	return n
}

// printfSize bounds fmt.Sprintf(format, args...) without running it: the
// format's own bytes, plus for each verb its width and precision and the
// largest argument. A width taken from an argument (*) is refused.
func printfSize(format string, args []any) (int, error) {
	largest := 0
	for _, a := range args {
		largest = max(largest, argSize(a))
	}
	n := len(format)
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		// Flags, argument indexes, width and precision, up to the verb.
		for i < len(format) && strings.IndexByte("+-# 0123456789.[]*", format[i]) >= 0 {
			if format[i] == '*' {
				return 0, errStarWidth
			}
			if format[i] < '0' || format[i] > '9' {
				i++
				continue
			}
			num := 0
			for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
				num = num*10 + int(format[i]-'0')
				if num > MaxRenderWork {
					return 0, errTooMuchWork
				}
			}
			n += num
		}
		n += largest
		if n > MaxRenderWork {
			return 0, errTooMuchWork
		}
	}
	return n, nil
}
