package spec

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// SecretFunc is the name of the template function that reads a secret.
const SecretFunc = "secret"

// TemplateFuncs returns the functions templates may call besides the
// text/template builtins. secret resolves a reference to its value; at
// admission it is never called.
func TemplateFuncs(secret func(ref string) (string, error)) template.FuncMap {
	return template.FuncMap{
		SecretFunc: secret,
		"b64enc":   func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"b64dec": func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				// Never wrap err: it quotes the input, which is a secret.
				return "", errors.New("b64dec: value is not standard base64")
			}
			return string(b), nil
		},
		"trim":  strings.TrimSpace,
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
		"quote": strconv.Quote,
	}
}

// builtinFuncs are text/template's predefined functions, which it does not export.
var builtinFuncs = []string{
	"and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne",
	"not", "or", "print", "printf", "println", "slice", "urlquery",
}

// knownFuncs are the functions a template may call, computed once: the
// admission path checks every template against them.
var knownFuncs, knownFuncList = func() (map[string]bool, string) {
	names := append([]string(nil), builtinFuncs...)
	for n := range TemplateFuncs(nil) {
		names = append(names, n)
	}
	sort.Strings(names)
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	return known, strings.Join(names, ", ")
}()

// TemplateError locates a template problem by line and column only: a
// template's text may hold secrets, so no error quotes it.
type TemplateError struct {
	Line, Col int // Col is 0 when unknown
	Problem   string
}

func (e *TemplateError) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Col, e.Problem)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Problem)
}

// parseErrLine finds the line in text/template's parse errors, which are
// plain strings "template: NAME:LINE: ...": the only place it reports them.
var parseErrLine = regexp.MustCompile(`^template: [^:]*:(\d+):`)

// ParseTemplate parses a file's template and returns its secret references,
// keyed by the text of each `secret "<ref>"` argument. Unknown functions,
// syntax errors and references that do not parse are reported with their
// position, never with the template's text.
func ParseTemplate(text, defaultVault string, cloud Cloud) (map[string]Ref, error) {
	const name = "t"
	trees := map[string]*parse.Tree{}
	root := parse.New(name)
	// Unknown functions are found by the walk below, which knows their position.
	root.Mode = parse.SkipFuncCheck
	if _, err := root.Parse(text, "", "", trees); err != nil {
		line := 0
		if m := parseErrLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		return nil, &TemplateError{Line: line, Problem: "does not parse"}
	}
	refs := map[string]Ref{}
	var walkErr error
	for _, tree := range trees {
		locate := func(n parse.Node, problem string) *TemplateError {
			line, col := position(tree, n)
			return &TemplateError{Line: line, Col: col, Problem: problem}
		}
		walk(tree.Root, func(n parse.Node) bool {
			cmd, ok := n.(*parse.CommandNode)
			if !ok {
				if id, ok := n.(*parse.IdentifierNode); ok {
					if !knownFuncs[id.Ident] {
						walkErr = locate(id, fmt.Sprintf("unknown function %q: use one of %s", id.Ident, knownFuncList))
					} else if id.Ident == SecretFunc {
						walkErr = locate(id, `secret must be called directly with one quoted reference: {{ secret "name#path" }}`)
					}
				}
				return walkErr == nil
			}
			id, ok := cmd.Args[0].(*parse.IdentifierNode)
			if !ok || id.Ident != SecretFunc {
				return true
			}
			var arg *parse.StringNode
			if len(cmd.Args) == 2 {
				arg, _ = cmd.Args[1].(*parse.StringNode)
			}
			if arg == nil {
				walkErr = locate(cmd, `secret takes one quoted reference: {{ secret "name#path" }}`)
				return false
			}
			r, err := ParseRef(arg.Text, defaultVault, cloud)
			if err != nil {
				walkErr = locate(cmd, err.Error())
				return false
			}
			refs[arg.Text] = r
			return false // a proper call: nothing below it to check
		})
		if walkErr != nil {
			return nil, walkErr
		}
	}
	if len(refs) == 0 {
		return nil, &TemplateError{Line: 1, Problem: `reads no secret: call {{ secret "name#path" }} at least once`}
	}
	// The tree parsed with text/template's own parser, and every function is
	// one the agent's template.Parse knows (TestBuiltinFuncs keeps
	// builtinFuncs true to text/template), so the agent parses it too.
	return refs, nil
}

// position gives a node's line and column, from the location that
// ErrorContext formats as "NAME:LINE:COL" (its context part quotes the
// template, so it is dropped).
func position(tree *parse.Tree, n parse.Node) (line, col int) {
	loc, _ := tree.ErrorContext(n)
	parts := strings.Split(loc, ":")
	if len(parts) >= 3 {
		line, _ = strconv.Atoi(parts[len(parts)-2])
		col, _ = strconv.Atoi(parts[len(parts)-1])
		col++ // ErrorContext counts columns from 0
	}
	return line, col
}

// walk visits n and, while visit returns true, its children.
func walk(n parse.Node, visit func(parse.Node) bool) {
	if n == nil || !visit(n) {
		return
	}
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, visit)
		}
	case *parse.ActionNode:
		walk(n.Pipe, visit)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			walk(c, visit)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			walk(a, visit)
		}
	case *parse.ChainNode:
		walk(n.Node, visit)
	case *parse.IfNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.RangeNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.WithNode:
		walkBranch(&n.BranchNode, visit)
	case *parse.TemplateNode:
		walk(n.Pipe, visit)
	}
}

func walkBranch(b *parse.BranchNode, visit func(parse.Node) bool) {
	walk(b.Pipe, visit)
	walk(b.List, visit)
	walk(b.ElseList, visit)
}
