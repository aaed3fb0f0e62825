package execwrap

import (
	"bytes"
	"unicode/utf8"
)

// kubeletExpand is the kubelet's $(VAR) expansion
// (k8s.io/kubernetes/third_party/forked/golang/expansion, Expand and
// MappingFuncFor), copied so that tests can check the wrapper against it
// without the kubernetes module.
func kubeletExpand(input string, vars map[string]string) string {
	mapping := func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return "$(" + name + ")"
	}
	var buf bytes.Buffer
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] == '$' && cursor+1 < len(input) {
			buf.WriteString(input[checkpoint:cursor])
			read, isVar, advance := tryReadVariableName(input[cursor+1:])
			if isVar {
				buf.WriteString(mapping(read))
			} else {
				buf.WriteString(read)
			}
			cursor += advance
			checkpoint = cursor + 1
		}
	}
	return buf.String() + input[checkpoint:]
}

func tryReadVariableName(input string) (string, bool, int) {
	r, size := utf8.DecodeRuneInString(input)
	switch r {
	case '$':
		return input[0:size], false, size
	case '(':
		for i := 1; i < len(input); i++ {
			if input[i] == ')' {
				return input[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + string(r), false, size
	}
}

// envEntry is a container's env entry: a literal value the kubelet expands
// with the entries before it, or (resolved) one from elsewhere, taken as
// it is (valueFrom).
type envEntry struct {
	name, value string
	resolved    bool
}

// kubeletRun is what the kubelet gives a container's process: argv from
// command and args expanded with the container's env, and that env, each
// literal value expanded with the entries before it.
func kubeletRun(argv []string, env []envEntry) ([]string, map[string]string) {
	vars := map[string]string{}
	for _, e := range env {
		if e.resolved {
			vars[e.name] = e.value
		} else {
			vars[e.name] = kubeletExpand(e.value, vars)
		}
	}
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = kubeletExpand(a, vars)
	}
	return out, vars
}

// kubeletProbe is an exec probe's argv: expanded with the literal values
// alone, a valueFrom variable standing for "" (ExpandContainerCommandOnlyStatic).
func kubeletProbe(argv []string, env []envEntry) []string {
	vars := map[string]string{}
	for _, e := range env {
		if e.resolved {
			vars[e.name] = ""
		} else {
			vars[e.name] = e.value
		}
	}
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = kubeletExpand(a, vars)
	}
	return out
}
