package credprovider

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegistryLessCredential: a user:password or {"username","password"}
// credential names no registry. It answers for a registry that matchImages
// names without a glob, and for no other: under *.example.com a mistyped
// image name (registyr.example.com) must not get the password, and the
// refusal says what to change.
func TestRegistryLessCredential(t *testing.T) {
	emu, iss := startEmulator(t)
	base := []string{"--default-vault", vaultName, "--tenant-id", tenantID}
	tests := []struct {
		name, image, secret string
		args                []string
		wantCode            int
		wantLine            string // in the error line
	}{
		{"named without a glob", "registry.example.com/app", "plain-cred", []string{"--match-images", "registry.example.com,*.example.com"}, 0, ""},
		{"json form, named without a glob", "registry.example.com/app", "json-cred", []string{"--match-images", "registry.example.com"}, 0, ""},
		{"typo under a glob", "registyr.example.com/app", "plain-cred", []string{"--match-images", "registry.example.com,*.example.com"}, 1,
			`is matched only by the glob "*.example.com" of matchImages: a mistyped image name would send the password to whoever runs that registry. ` +
				`Fix: store a dockerconfigjson with an entry for registyr.example.com ({"auths":{"registyr.example.com":{"auth":"<base64 of user:password>"}}}), or list registyr.example.com in matchImages without a glob`},
		{"json form under a glob", "registyr.example.com/app", "json-cred", []string{"--match-images", "*.example.com"}, 1, `matched only by the glob "*.example.com"`},
		{"no matchImages given", "registyr.example.com/app", "plain-cred", nil, 1, "the provider was not given its matchImages (--match-images)"},
		{"dockerconfigjson under a glob", "mirror.example.com:5000/team/app", "mirror-registry-cred", []string{"--match-images", "*.example.com:5000"}, 0, ""},
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "user-password.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := strings.Replace(strings.Replace(string(raw), "registry.example.com/app", tt.image, 1), `"plain-cred"`, `"`+tt.secret+`"`, 1)
			body, token := requestWithToken(t, iss, []byte(req))
			r := run(t, emu, body, append(append([]string{}, base...), tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q, stderr:\n%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			checkNoSecrets(t, r.stderr, token)
			if tt.wantCode == 0 {
				checkKubeletReads(t, []byte(r.stdout))
				return
			}
			for _, pw := range []string{plainPassword, jsonPassword} {
				if strings.Contains(r.stdout+r.stderr, pw) {
					t.Errorf("the password is in the output:\n%s%s", r.stdout, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, tt.wantLine) {
				t.Errorf("stderr:\n%s\nwant it to hold %q", r.stderr, tt.wantLine)
			}
		})
	}
}
