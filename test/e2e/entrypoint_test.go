//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kvinject/kvinject/internal/entrypoint"
)

// TestEntrypointFromMirror: kvinject entrypoint reads the reference app's
// image from the local mirror registry (TLS with its own CA, basic auth)
// with the user's docker config, and prints what the image built here
// holds; without the credential or the CA it says what to fix.
func TestEntrypointFromMirror(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := tarball.ImageFromPath(filepath.Join(cluster.Root, "bin", "dbreader-image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) == 0 {
		t.Fatalf("the app image built here has no ENTRYPOINT: %+v", cfg.Config)
	}

	key, value, err := cluster.EntrypointAnnotation(ctx, "secret-reader", mirrorImage)
	if err != nil {
		t.Fatal(err)
	}
	want := entrypoint.EncodeProgram(append(append([]string{}, cfg.Config.Entrypoint...), cfg.Config.Cmd...))
	if key != entrypoint.AnnotationPrefix+"secret-reader" || value != want {
		t.Errorf("annotation %s: %s, want %s: %s", key, value, entrypoint.AnnotationPrefix+"secret-reader", want)
	}
	_, value, err = cluster.EntrypointAnnotation(ctx, "secret-reader", mirrorImage, "--entrypoint-only")
	if want := entrypoint.EncodeProgram(cfg.Config.Entrypoint); err != nil || value != want {
		t.Errorf("--entrypoint-only: %s, %v; want %s", value, err, want)
	}

	platform := cfg.OS + "/" + cfg.Architecture
	dockerConfig, err := cluster.MirrorDockerConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, password, err := cluster.MirrorCredential()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dockerConfig string
		args               []string
		want               string
	}{
		{"no credential", t.TempDir(), []string{"--ca-file", cluster.RegistryCAFile, "--platform", platform, mirrorImage}, "wants credentials and none were found for it"},
		{"no CA", dockerConfig, []string{"--platform", platform, mirrorImage}, "signed by an authority not trusted here"},
		{"no such platform", dockerConfig, []string{"--ca-file", cluster.RegistryCAFile, "--platform", "linux/s390x", mirrorImage}, "no image for platform linux/s390x; the image offers: linux/" + cfg.Architecture},
	} {
		code, out, errOut, err := cluster.RunEntrypoint(ctx, tc.dockerConfig, tc.args...)
		if err != nil || code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %v, stdout %q, stderr %q; want exit 1 saying %q", tc.name, code, err, out, errOut, tc.want)
		}
		if strings.Contains(out+errOut, password) {
			t.Errorf("%s: the output holds the registry password", tc.name)
		}
	}
}
