package hygiene

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDockerfileShipsWhatMakeImageShips compares the programs `make image`
// puts into the image with those the Dockerfile builds and copies.
func TestDockerfileShipsWhatMakeImageShips(t *testing.T) {
	root := repoRoot(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	makefile, dockerfile := read("Makefile"), read("Dockerfile")

	_, recipe, ok := strings.Cut(makefile, "\nimage:")
	if !ok {
		t.Fatal("Makefile has no image target")
	}
	recipe, _, _ = strings.Cut(recipe, "\n\n")
	image := matches(t, recipe, `-(?:binary|file) bin/([a-z-]+)`)
	built := matches(t, dockerfile, `\./cmd/([a-z-]+)`)
	copied := matches(t, dockerfile, `COPY --from=build /out/([a-z-]+)`)
	if diff := cmp.Diff(image, built); diff != "" {
		t.Errorf("the Dockerfile's go build differs from make image's programs (-make image +Dockerfile):\n%s", diff)
	}
	if diff := cmp.Diff(image, copied); diff != "" {
		t.Errorf("the Dockerfile's COPY lines differ from make image's programs (-make image +Dockerfile):\n%s", diff)
	}
}

func matches(t *testing.T, s, expr string) []string {
	t.Helper()
	var out []string
	for _, m := range regexp.MustCompile(expr).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	if len(out) == 0 {
		t.Fatalf("nothing matches %s", expr)
	}
	return slices.Compact(out)
}
