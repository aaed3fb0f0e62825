package hygiene

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/kvinject/kvinject"

// layer is where a package of the module stands: an import runs from a
// higher layer to a lower one, never up (README.md, Layout).
type layer int

const (
	foundation layer = iota + 1 // internal/: what programs share
	program                     // a top-level folder: one program's own code
	role                        // internal/: the body of a kvinject command's role
	command                     // cmd/: a binary's main
	testkit                     // internal/testkit/: imported by tests only
	outside                     // test/ and manifests/: tests, benchmarks, the renderer
)

func (l layer) String() string {
	return [...]string{"?", "foundation", "program", "command role", "command", "test kit", "test code"}[l]
}

// roles are the internal/ packages that are a kvinject command's role
// rather than something programs share: they may use the programs they
// serve.
var roles = []string{"internal/webhookserver", "internal/preview", "internal/esoconvert", "internal/entrypoint", "internal/azemu"}

func layerOf(rel string) layer {
	under := func(dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }
	switch {
	case under("cmd"):
		return command
	case under("test"), under("manifests"):
		return outside
	case under("internal/testkit"):
		return testkit
	case slices.ContainsFunc(roles, under):
		return role
	case under("internal"):
		return foundation
	}
	return program
}

// noKubernetes are the packages that carry no Kubernetes client code, with
// everything they import: the small binaries a pod or the kubelet runs, and
// the wire packages between them.
var noKubernetes = []string{
	"cmd/kvinject-agent", "initagent",
	"cmd/kvinject-credential-provider", "credprovider",
	"cmd/kvinject-exec",
	"internal/spec", "internal/cacheapi", "internal/keyvault", "internal/secretform", "internal/execwrap", "internal/pfxcheck",
}

// execWrapperBans are what the exec wrapper, the command of application
// containers, never imports: no Azure code, nothing that reaches the
// network, no process spawning, no fmt (its size).
func execWrapperBans(dep string) bool {
	return strings.HasPrefix(dep, "github.com/Azure/") || dep == "net" || strings.HasPrefix(dep, "net/") ||
		dep == "os/exec" || dep == "fmt"
}

func isKubernetes(dep string) bool {
	return strings.HasPrefix(dep, "k8s.io/") || strings.HasPrefix(dep, "sigs.k8s.io/")
}

type listed struct {
	ImportPath                         string
	Imports, TestImports, XTestImports []string
	Deps                               []string
}

// modulePackages lists the module's packages with go list -json: each
// package's imports (its tests' apart) and every package it depends on.
func modulePackages(t *testing.T) map[string]listed {
	t.Helper()
	root := repoRoot(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the packages")
	}
	cmd := exec.Command(goBin, "list", "-json=ImportPath,Imports,TestImports,XTestImports,Deps", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]listed{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[rel(p.ImportPath)] = p
	}
	return pkgs
}

// rel is a module package's path below the module, "" for another's.
func rel(importPath string) string {
	if r, ok := strings.CutPrefix(importPath, module+"/"); ok {
		return r
	}
	return ""
}

// TestImportRules keeps the layers of README.md's Layout section: imports
// run down; a program's package is imported by the commands alone; test
// kits by tests alone; the small binaries and the wire packages carry no
// Kubernetes package.
func TestImportRules(t *testing.T) {
	pkgs := modulePackages(t)
	for _, name := range noKubernetes {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("%s is not a package of the module: update noKubernetes", name)
		}
	}
	for from, p := range pkgs {
		for _, problem := range importProblems(from, p) {
			t.Error(problem)
		}
	}
}

// importProblems are the rules p (at from, below the module) breaks.
func importProblems(from string, p listed) []string {
	var problems []string
	fl := layerOf(from)
	for _, imp := range p.Imports {
		to := rel(imp)
		if to == "" {
			continue
		}
		tl := layerOf(to)
		switch {
		case tl == testkit && fl != testkit && fl != outside:
			problems = append(problems, fmt.Sprintf("%s imports the test kit %s outside its tests: a kit is for _test.go files, other kits and test/", from, to))
		case tl == outside && fl != outside:
			problems = append(problems, fmt.Sprintf("%s imports %s, test code", from, to))
		case fl == outside || fl == testkit || tl == testkit:
		case tl > fl:
			problems = append(problems, fmt.Sprintf("%s (%s) imports %s (%s), a higher layer: move the shared part down", from, fl, to, tl))
		case tl == program && fl == program:
			problems = append(problems, fmt.Sprintf("%s imports the program %s: move what both need into internal/", from, to))
		}
	}
	if slices.Contains(noKubernetes, from) {
		for _, dep := range p.Deps {
			if isKubernetes(dep) {
				problems = append(problems, fmt.Sprintf("%s depends on %s: it must carry no Kubernetes package", from, dep))
			}
		}
	}
	if from == "cmd/kvinject-exec" {
		for _, dep := range p.Deps {
			if execWrapperBans(dep) {
				problems = append(problems, fmt.Sprintf("the exec wrapper depends on %s: no Azure, network, exec or fmt package", dep))
			}
		}
	}
	return problems
}

// TestImportProblems: each rule catches what it is for.
func TestImportProblems(t *testing.T) {
	kit := module + "/internal/testkit/certtest"
	tests := []struct {
		name string
		from string
		p    listed
		want int
	}{
		{"foundation to foundation", "internal/keyvault", listed{Imports: []string{module + "/internal/spec"}}, 0},
		{"program to foundation", "initagent", listed{Imports: []string{module + "/internal/keyvault"}}, 0},
		{"role to program", "internal/webhookserver", listed{Imports: []string{module + "/webhook"}}, 0},
		{"command to program", "cmd/kvinject", listed{Imports: []string{module + "/initagent"}}, 0},
		{"foundation to program", "internal/keyvault", listed{Imports: []string{module + "/initagent"}}, 1},
		{"program to program", "cacheserver", listed{Imports: []string{module + "/initagent"}}, 1},
		{"program to role", "credprovider", listed{Imports: []string{module + "/internal/azemu"}}, 1},
		{"kit from product code", "internal/spec", listed{Imports: []string{kit}}, 1},
		{"kit from a test", "internal/spec", listed{TestImports: []string{kit}, XTestImports: []string{kit}}, 0},
		{"kit from a kit", "internal/testkit/registrytest", listed{Imports: []string{kit}}, 0},
		{"kit from test/", "test/bench/cache", listed{Imports: []string{kit, module + "/cacheserver"}}, 0},
		{"test code from product code", "webhook", listed{Imports: []string{module + "/test/e2e/harness"}}, 1},
		{"Kubernetes in the agent", "initagent", listed{Deps: []string{"k8s.io/api/core/v1", "sigs.k8s.io/yaml"}}, 2},
		{"Kubernetes in the webhook", "webhook", listed{Deps: []string{"k8s.io/api/core/v1"}}, 0},
		{"net in the exec wrapper", "cmd/kvinject-exec", listed{Deps: []string{"os", "net/http", "fmt"}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := importProblems(tt.from, tt.p); len(got) != tt.want {
				t.Errorf("importProblems(%s) = %q, want %d problem(s)", tt.from, got, tt.want)
			}
		})
	}
}
