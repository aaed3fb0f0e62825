package esoconvert

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvinject/kvinject/internal/testkit/golden"
)

func TestConvertGolden(t *testing.T) {
	reference := []string{"clustersecretstore.yaml", "serviceaccount.yaml", "externalsecret-pgsql.yaml", "externalsecret-registry.yaml"}
	tests := []struct {
		name         string
		files        []string
		opts         Options
		wantProblems int
	}{
		{name: "reference", files: append(reference, "deployment-dbreaderapp.yaml")},
		{name: "reference-typo", files: append(reference, "deployment-dbreaderapp-typo.yaml"), wantProblems: 1,
			opts: Options{Issuer: "https://homelabissuer.z6.web.core.windows.net/", IdentityName: "eso-identity", ResourceGroup: "homelab-rg"}},
		{name: "no-workload", files: reference},
		{name: "edge-cases", files: []string{"edge-cases.yaml"}, wantProblems: 2},
		{name: "pull-only", files: []string{"pull-only.yaml"}},
		// Kubernetes 1.33 (OpenShift 4.20): the mirror's pull secret moves
		// to the provider's node mode, not to the pod's token, and env
		// variables go through the exec wrapper.
		{name: "reference-1.33", files: append(reference, "deployment-dbreaderapp.yaml"), opts: Options{KubeMinor: 33}},
		{name: "pull-only-1.33", files: []string{"pull-only.yaml"}, opts: Options{KubeMinor: 33, Issuer: "https://issuer.example.com/", ResourceGroup: "build-rg"}},
		{name: "reference-1.35", files: append(reference, "deployment-dbreaderapp.yaml"), opts: Options{KubeMinor: 35}},
		{name: "containers-1.33", files: append(reference, "deployment-containers.yaml"), opts: Options{KubeMinor: 33}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var in Input
			for _, f := range tt.files {
				r, err := os.Open(filepath.Join("testdata", f))
				if err != nil {
					t.Fatal(err)
				}
				if err := in.Read(r, f); err != nil {
					t.Fatal(err)
				}
				r.Close()
			}
			res := Convert(&in)
			if len(res.Problems) != tt.wantProblems {
				t.Errorf("problems = %q, want %d", res.Problems, tt.wantProblems)
			}
			var out bytes.Buffer
			if err := Write(&out, res, tt.opts); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tt.name+".golden"), out.Bytes())
		})
	}
}

// FuzzRead feeds arbitrary YAML to the reader and the conversion: errors are
// fine, panics are not.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"edge-cases.yaml", "externalsecret-pgsql.yaml", "deployment-dbreaderapp.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var in Input
		if err := in.Read(bytes.NewReader(b), "fuzz"); err != nil {
			return
		}
		res := Convert(&in)
		var out bytes.Buffer
		if err := Write(&out, res, Options{}); err != nil {
			t.Fatal(err)
		}
	})
}
