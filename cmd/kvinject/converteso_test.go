package main

import (
	"strings"
	"testing"
)

func TestConvertESOKubeVersion(t *testing.T) {
	var files []string
	for _, f := range []string{"clustersecretstore.yaml", "serviceaccount.yaml", "externalsecret-pgsql.yaml", "externalsecret-registry.yaml", "deployment-dbreaderapp.yaml"} {
		files = append(files, "-f", "../../internal/esoconvert/testdata/"+f)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "1.33 wraps", args: []string{"--kube-version", "v1.33.5"}, wantOut: "env variables on Kubernetes 1.33 (no EnvFiles before 1.35): the app stays as it is"},
		{name: "1.35 fileKeyRef", args: []string{"--kube-version", "1.35"}, wantOut: "the webhook adds valueFrom.fileKeyRef entries for them"},
		{name: "1.33 pulls in node mode", args: []string{"--kube-version", "1.33"}, wantOut: "kvinject-credential-provider's node mode reads"},
		{name: "no version: both deliveries, the pod's token", wantOut: "with the pod's own token"},
		{name: "no version says both", wantOut: "(--kube-version decides for your cluster)"},
		{name: "not a version", args: []string{"--kube-version", "latest"}, wantCode: 2, wantErr: "kvinject convert-eso: --kube-version: \"latest\" is not a Kubernetes 1.x version like 1.33\n"},
		{name: "bad platform with resolve", args: []string{"--resolve-entrypoints", "--platform", "arm64"}, wantCode: 2, wantErr: "platform \"arm64\": want os/arch[/variant]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCommand(t, "", append(append([]string{"convert-eso"}, files...), tt.args...)...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant stdout with %q, stderr with %q", code, tt.wantCode, out, errOut, tt.wantOut, tt.wantErr)
			}
		})
	}
}
