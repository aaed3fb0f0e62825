package initagent

import (
	"encoding/base64"
	"testing"

	"github.com/kvinject/kvinject/internal/spec"
)

const (
	testVault  = "https://homelab-kv.vault.azure.net"
	testClient = "11111111-2222-3333-4444-555555555555"
	testTenant = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// fakeJWT builds an unsigned JWT with the given claims JSON.
func fakeJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}

// templateFile is a template file of the spec, its references parsed as the
// webhook parses them.
func templateFile(t *testing.T, name, text string) spec.File {
	t.Helper()
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	refs, err := spec.ParseTemplate(text, testVault, cloud)
	if err != nil {
		t.Fatalf("ParseTemplate(%q): %v", text, err)
	}
	return spec.File{Name: name, Mode: "0444", Template: text, Refs: refs}
}
