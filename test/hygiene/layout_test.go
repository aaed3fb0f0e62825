package hygiene

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// layoutRows returns the paths named in the first column of the README's
// Layout table: `cmd/kvinject`, `webhook/` and so on, without the slash.
func layoutRows(t *testing.T, readme string) []string {
	t.Helper()
	_, after, ok := strings.Cut(readme, "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no ## Layout section")
	}
	if section, _, ok := strings.Cut(after, "\n## "); ok {
		after = section
	}
	code := regexp.MustCompile("`([^`]+)`")
	var paths []string
	for line := range strings.SplitSeq(after, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			paths = append(paths, strings.TrimSuffix(m[1], "/"))
		}
	}
	return paths
}

// TestReadmeLayoutNamesEveryPackage fails when a package of the module has
// no row in the README's Layout table: a row names the package or a folder
// above it (`test/e2e` covers test/e2e/harness).
func TestReadmeLayoutNamesEveryPackage(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := layoutRows(t, string(readme))
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/kvinject/kvinject/"
	for pkg := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		rel := strings.TrimPrefix(pkg, module)
		if !covered(rel, rows) {
			t.Errorf("package %s has no row in README.md's Layout table: add one saying what it owns", rel)
		}
	}
	for _, row := range rows {
		if _, err := os.Stat(filepath.Join(root, row)); err != nil {
			t.Errorf("README.md's Layout table names %s, which does not exist: remove or rename the row", row)
		}
	}
}

func covered(pkg string, rows []string) bool {
	for _, r := range rows {
		if pkg == r || strings.HasPrefix(pkg, r+"/") {
			return true
		}
	}
	return false
}

func TestCovered(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		rows []string
		want bool
	}{
		{"test/e2e/harness", []string{"test/e2e"}, true},
		{"test/e2e", []string{"test/e2e"}, true},
		{"cmd/kvinject-exec", []string{"cmd/kvinject"}, false},
		{"internal/spec", nil, false},
	} {
		if got := covered(tc.pkg, tc.rows); got != tc.want {
			t.Errorf("covered(%q, %q) = %v, want %v", tc.pkg, tc.rows, got, tc.want)
		}
	}
}
