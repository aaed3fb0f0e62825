// Package helmtool runs the Helm CLI pinned in go.mod as a tool (helm.sh/helm/v4/cmd/helm), so that
// tests use the same Helm everywhere without a Helm installed on the machine.
package helmtool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

// ChartDir is kvinject's chart, relative to the repository root.
const ChartDir = "charts/kvinject"

var (
	once    sync.Once
	path    string
	pathErr error
)

// Path builds the pinned Helm once (cached by the go command, like every `go tool`) and returns
// the binary's path. root is the module's root.
func Path(ctx context.Context, root string) (string, error) {
	once.Do(func() {
		cmd := exec.CommandContext(ctx, "go", "tool", "-n", "helm")
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			pathErr = fmt.Errorf("go tool -n helm: %w: %s", err, strings.TrimSpace(stderr.String()))
			return
		}
		path = strings.TrimSpace(string(out))
		if path == "" {
			pathErr = errors.New("go tool -n helm printed no path")
		}
	})
	return path, pathErr
}

// Run runs Helm with args in dir and returns its standard output; an error carries its standard
// error.
func Run(ctx context.Context, root, dir string, env []string, args ...string) ([]byte, error) {
	helm, err := Path(ctx, root)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
