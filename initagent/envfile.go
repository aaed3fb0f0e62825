package initagent

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The env file is read by the kubelet, not by a shell: its parser
// (pkg/kubelet/util/env, ParseEnv) takes NAME='value' lines, keeps
// everything between the single quotes literally, newlines included, and
// reads line by line with bufio.Scanner. What that cannot carry is refused
// here, so a pod never starts with a variable the kubelet changed.

// writeEnvLine appends NAME='value' to the env file. The value has passed
// envValueProblem.
func writeEnvLine(b *bytes.Buffer, name string, value []byte) {
	b.WriteString(name)
	b.WriteString("='")
	b.Write(value)
	b.WriteString("'\n")
}

// envValueProblem says why the kubelet could not pass value on exactly as
// the variable name, or "" when it can.
func envValueProblem(name string, value []byte) (cause, fix string) {
	const fixFile = "deliver it as a file instead (a kvinject.io/secret-<file> annotation)"
	v := string(value)
	switch {
	case v == "":
		return "the value is empty, which the kubelet takes for a missing variable", "give the secret a value, or " + fixFile
	case strings.ContainsRune(v, '\''):
		return "the value holds a single quote ('), which the kubelet's env file format cannot carry", fixFile
	case strings.ContainsRune(v, 0):
		return "the value holds a NUL byte, which no environment variable can carry", fixFile
	case !utf8.ValidString(v):
		return "the value is not UTF-8 text, which the container runtime needs for environment variables", fixFile
	case strings.Contains(v, "\r\n"):
		return "the value holds a CR LF line break, which the kubelet's env file reader turns into LF", fixFile
	}
	// bufio.Scanner's default limit, which the kubelet's reader keeps.
	line := name + "='" + v + "'"
	for l := range strings.SplitSeq(line, "\n") {
		if len(l) >= bufio.MaxScanTokenSize {
			return fmt.Sprintf("a line of the variable in the env file would be %d bytes, more than the kubelet's env file reader takes (%d)", len(l), bufio.MaxScanTokenSize-1), fixFile
		}
	}
	return "", ""
}
