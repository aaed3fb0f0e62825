package esoconvert

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kvinject/kvinject/internal/entrypoint"
	"github.com/kvinject/kvinject/internal/testkit/golden"
	"github.com/kvinject/kvinject/internal/testkit/registrytest"
)

// referenceHost is the reference setup's mirror registry, which the tests
// replace with a registry on loopback.
const referenceHost = "mirror-registry.alishomelab.local:8443"

// TestResolveEntrypointsGolden: convert-eso --resolve-entrypoints on the
// reference setup and on several containers, reading the images from a
// registry on loopback (TLS, basic auth).
func TestResolveEntrypointsGolden(t *testing.T) {
	reg := registrytest.New(t)
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	reg.Push(t, "docker/dbreader:v1", registrytest.Image(t, amd64, v1.Config{Entrypoint: []string{"/dbreader"}}))
	reg.Push(t, "tools/worker:3", registrytest.Image(t, amd64, v1.Config{Entrypoint: []string{"/worker", "--log=json"}, Cmd: []string{"--queue", "default"}}))
	reference := []string{"clustersecretstore.yaml", "serviceaccount.yaml", "externalsecret-pgsql.yaml", "externalsecret-registry.yaml"}
	tests := []struct {
		name      string
		files     []string
		opts      Options
		wantErr   string
		wantAdded int
	}{
		{name: "reference-1.33-resolved", files: append(reference, "deployment-dbreaderapp.yaml"), opts: Options{KubeMinor: 33}, wantAdded: 1},
		{name: "reference-resolved", files: append(reference, "deployment-dbreaderapp.yaml"), wantAdded: 1},
		{name: "reference-1.35-resolved", files: append(reference, "deployment-dbreaderapp.yaml"), opts: Options{KubeMinor: 35}},
		{name: "containers-1.33-resolved", files: append(reference, "deployment-containers.yaml"), opts: Options{KubeMinor: 33}, wantAdded: 2},
		{name: "missing-image", files: append(reference, "deployment-containers.yaml", "deployment-missing-image.yaml"), opts: Options{KubeMinor: 33}, wantAdded: 2,
			wantErr: "Deployment group1/unpushed container app: image REGISTRY/docker/unpushed:v1: no such repository, tag or digest in registry REGISTRY: check the image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in Input
			for _, f := range tt.files {
				b, err := os.ReadFile(filepath.Join("testdata", f))
				if err != nil {
					t.Fatal(err)
				}
				b = bytes.ReplaceAll(b, []byte(referenceHost), []byte(reg.Host))
				if err := in.Read(bytes.NewReader(b), f); err != nil {
					t.Fatal(err)
				}
			}
			res := Convert(&in)
			o := entrypoint.Options{Keychain: reg.Keychain(), CAFiles: []string{reg.CAFile}}
			o.Complete()
			c, err := entrypoint.New(o)
			if err != nil {
				t.Fatal(err)
			}
			before := annotationCount(res)
			err = ResolveEntrypoints(context.Background(), &res, tt.opts, c)
			gotErr := ""
			if err != nil {
				gotErr = strings.ReplaceAll(err.Error(), reg.Host, "REGISTRY")
			}
			if !strings.HasPrefix(gotErr, tt.wantErr) || (tt.wantErr == "") != (gotErr == "") {
				t.Errorf("ResolveEntrypoints() = %q, want %q", gotErr, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantAdded, annotationCount(res)-before); diff != "" {
				t.Errorf("annotations added (-want +got):\n%s", diff)
			}
			var out bytes.Buffer
			if err := Write(&out, res, tt.opts); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"), bytes.ReplaceAll(out.Bytes(), []byte(reg.Host), []byte(referenceHost)))
		})
	}
}

func annotationCount(res Result) int {
	n := 0
	for _, m := range res.Moves {
		n += len(m.Annotations)
	}
	return n
}
