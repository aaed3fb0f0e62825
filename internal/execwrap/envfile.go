package execwrap

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// ErrEnvFileFormat is a line of the env file the kubelet would not read.
var ErrEnvFileFormat = errors.New("not in the kubelet's env file format")

// LookupEnv returns the value of key in data, an env file in the kubelet's
// format (NAME='value' lines, the value taken literally between single
// quotes and possibly spanning lines), exactly as the kubelet's reader
// (pkg/kubelet/util/env.ParseEnv) returns it: the first assignment of key
// wins, and a line before it that the kubelet refuses is an error. found is
// false when data does not assign key. An error never quotes the file.
func LookupEnv(data []byte, key string) (value string, found bool, err error) {
	scanner := bufio.NewScanner(bytes.NewReader(data))
	lineNum := 0
	bad := func(what string) (string, bool, error) {
		return "", false, errors.Join(ErrEnvFileFormat, errors.New("line "+strconv.Itoa(lineNum)+": "+what))
	}
	for scanner.Scan() {
		lineNum++
		line := strings.TrimLeft(scanner.Text(), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, valuePart, problem := splitAssignment(line)
		if problem != "" {
			return bad(problem)
		}
		if trimmed := strings.TrimLeft(valuePart, " \t"); trimmed != valuePart {
			// KEY= 'v' sets KEY to the empty string, as a shell would.
			if name == key {
				return "", true, nil
			}
			continue
		}
		if !strings.HasPrefix(valuePart, "'") {
			return bad("value not in single quotes")
		}
		v, problem := readQuoted(scanner, valuePart[1:], &lineNum)
		if problem != "" {
			return bad(problem)
		}
		if name == key {
			return v, true, nil
		}
	}
	if err := scanner.Err(); err != nil {
		return "", false, errors.Join(ErrEnvFileFormat, err)
	}
	return "", false, nil
}

// splitAssignment splits a NAME=value line, or says what is wrong with it.
func splitAssignment(line string) (name, value, problem string) {
	eq := strings.Index(line, "=")
	if eq == -1 {
		return "", "", "missing '='"
	}
	namePart := line[:eq]
	name = strings.TrimRight(namePart, " \t")
	if name == "" {
		return "", "", "empty variable name"
	}
	if name != namePart {
		return "", "", "whitespace before '='"
	}
	return name, line[eq+1:], ""
}

// readQuoted reads a single-quoted value: rest follows the opening quote,
// and while the quote is open the value goes on over the next lines, which
// lineNum counts. An unclosed quote is reported at the line it opened on.
func readQuoted(scanner *bufio.Scanner, rest string, lineNum *int) (value, problem string) {
	var b strings.Builder
	start := *lineNum
	for {
		if i := strings.Index(rest, "'"); i != -1 {
			b.WriteString(rest[:i])
			after := strings.TrimLeft(rest[i+1:], " \t")
			if after != "" && !strings.HasPrefix(after, "#") {
				return "", "content after the closing quote"
			}
			return b.String(), ""
		}
		b.WriteString(rest)
		b.WriteString("\n")
		if !scanner.Scan() {
			*lineNum = start
			return "", "unclosed single quote"
		}
		*lineNum++
		rest = scanner.Text()
	}
}
