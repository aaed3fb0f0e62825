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

// MaxTemplateSteps bounds the nodes one template executes, counting each
// {{template}} call as the whole template it calls. Without range and
// recursion, which CheckTemplate refuses, this bounds the agent's work
// before it starts.
const MaxTemplateSteps = 100_000

// ParseTemplate parses a file's template and returns its secret references,
// keyed by the text of each `secret "<ref>"` argument. Unknown functions,
// syntax errors, references that do not parse and constructs that could run
// without bound are reported with their position, never with the template's
// text.
func ParseTemplate(text, defaultVault string, cloud Cloud) (map[string]Ref, error) {
	refs := map[string]Ref{}
	err := checkTemplate(text, func(locate func(parse.Node, string) *TemplateError, cmd *parse.CommandNode, arg string) error {
		r, err := ParseRef(arg, defaultVault, cloud)
		if err != nil {
			return locate(cmd, err.Error())
		}
		refs[arg] = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, &TemplateError{Line: 1, Problem: `reads no secret: call {{ secret "name#path" }} at least once`}
	}
	// The tree parsed with text/template's own parser, and every function is
	// one the agent's template.Parse knows (TestBuiltinFuncs keeps
	// builtinFuncs true to text/template), so the agent parses it too.
	return refs, nil
}

// CheckTemplate makes the checks of ParseTemplate that need no vault: the
// agent runs it on the spec it is given, so a template the webhook would
// refuse is refused there too.
func CheckTemplate(text string) error {
	_, err := checkTemplateArgs(text)
	return err
}

// checkTemplateArgs is CheckTemplate, returning the arguments of the
// template's secret calls: the keys of its File.Refs.
func checkTemplateArgs(text string) (map[string]bool, error) {
	args := map[string]bool{}
	err := checkTemplate(text, func(_ func(parse.Node, string) *TemplateError, _ *parse.CommandNode, arg string) error {
		args[arg] = true
		return nil
	})
	if err == nil && len(args) == 0 {
		err = &TemplateError{Line: 1, Problem: `reads no secret: call {{ secret "name#path" }} at least once`}
	}
	return args, err
}

// checkTemplate parses text and walks every template it defines, calling
// secretCall for each well-formed {{ secret "<ref>" }}.
func checkTemplate(text string, secretCall func(locate func(parse.Node, string) *TemplateError, cmd *parse.CommandNode, arg string) error) error {
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
		return &TemplateError{Line: line, Problem: "does not parse"}
	}
	var walkErr error
	for _, tree := range sortedTrees(trees) {
		locate := func(n parse.Node, problem string) *TemplateError {
			line, col := position(tree, n)
			return &TemplateError{Line: line, Col: col, Problem: problem}
		}
		walk(tree.Root, func(n parse.Node) bool {
			descend, err := checkNode(n, trees, locate, secretCall)
			if err != nil && walkErr == nil {
				walkErr = err
			}
			return descend && walkErr == nil
		})
		if walkErr != nil {
			return walkErr
		}
	}
	// Every defined template, called or not: a recursive one is refused
	// even where nothing calls it yet.
	steps := map[string]int{}
	for _, tree := range sortedTrees(trees) {
		if _, err := templateSteps(tree.Name, trees, steps, map[string]bool{}); err != nil {
			return err
		}
	}
	return nil
}

// checkNode checks one node of a template's tree, and says whether the
// walk goes below it.
func checkNode(n parse.Node, trees map[string]*parse.Tree, locate func(parse.Node, string) *TemplateError,
	secretCall func(locate func(parse.Node, string) *TemplateError, cmd *parse.CommandNode, arg string) error) (bool, error) {
	switch n := n.(type) {
	case *parse.RangeNode:
		// A template's data is empty: range could only count up to
		// a number, which can be as large as the author likes.
		return true, locate(n, "range is not allowed: a template has no list to iterate (its data is empty); write the lines out")
	case *parse.TemplateNode:
		if trees[n.Name] == nil {
			return true, locate(n, fmt.Sprintf("template %s is not defined", Quote(n.Name)))
		}
	case *parse.IdentifierNode:
		if !knownFuncs[n.Ident] {
			return true, locate(n, fmt.Sprintf("unknown function %s: use one of %s", Quote(n.Ident), knownFuncList))
		} else if n.Ident == SecretFunc {
			return true, locate(n, `secret must be called directly with one quoted reference: {{ secret "name#path" }}`)
		}
	case *parse.CommandNode:
		id, ok := n.Args[0].(*parse.IdentifierNode)
		if !ok || id.Ident != SecretFunc {
			return true, nil
		}
		var arg *parse.StringNode
		if len(n.Args) == 2 {
			arg, _ = n.Args[1].(*parse.StringNode)
		}
		if arg == nil {
			return false, locate(n, `secret takes one quoted reference: {{ secret "name#path" }}`)
		}
		return false, secretCall(locate, n, arg.Text) // a proper call: nothing below it to check
	}
	return true, nil
}

// templateSteps counts the nodes that executing template name visits at
// most, each {{template}} call counting the template it calls in full, and
// refuses recursion, which text/template would follow 100,000 calls deep.
func templateSteps(name string, trees map[string]*parse.Tree, steps map[string]int, active map[string]bool) (int, error) {
	if n, ok := steps[name]; ok {
		return n, nil
	}
	tree := trees[name]
	if tree == nil || tree.Root == nil {
		return 0, nil // reported by the walk; an empty {{define}} has no root
	}
	active[name] = true
	defer delete(active, name)
	n := 0
	var err error
	walk(tree.Root, func(node parse.Node) bool {
		n++
		if t, ok := node.(*parse.TemplateNode); ok && err == nil {
			if active[t.Name] {
				line, col := position(tree, t)
				err = &TemplateError{Line: line, Col: col, Problem: fmt.Sprintf("template %s is called again while it runs: recursion is not allowed", Quote(t.Name))}
				return false
			}
			var m int
			m, err = templateSteps(t.Name, trees, steps, active)
			n += m
		}
		if err == nil && n > MaxTemplateSteps {
			line, col := position(tree, node)
			err = &TemplateError{Line: line, Col: col, Problem: fmt.Sprintf("the template would run more than %d steps: call fewer templates", MaxTemplateSteps)}
		}
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	steps[name] = n
	return n, nil
}

// sortedTrees orders trees by name, so the first problem reported is the
// same on every run.
func sortedTrees(trees map[string]*parse.Tree) []*parse.Tree {
	names := make([]string, 0, len(trees))
	for n := range trees {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*parse.Tree, len(names))
	for i, n := range names {
		out[i] = trees[n]
	}
	return out
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
