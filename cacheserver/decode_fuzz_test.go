package cacheserver

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/cacheapi"
	"github.com/kvinject/kvinject/internal/spec"
)

// FuzzDecodeRequest: a request the cache accepts names 1 to
// MaxSecretsPerRequest distinct secrets, each a vault of the cache's
// cloud, and decodes again to itself; nothing panics.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[{"vault":"` + vaultURL + `","name":"db-password"}]}`,
		`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[{"vault":"` + vaultURL + `","name":"a"},{"vault":"` + vaultURL + `/","name":"a"}]}`,
		`{"clientID":"` + clientID + `","tenantID":"` + tenantID + `","secrets":[{"vault":"HTTPS://HOMELAB-KV.vault.azure.net","name":"a","version":"0123456789abcdef0123456789abcdef"}]}`,
		`{"secrets":null}`, `[]`, `null`, ``, `{"clientID":1}`,
	} {
		f.Add([]byte(seed))
	}
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body, cloud)
		if err != nil {
			return
		}
		if n := len(req.Secrets); n == 0 || n > cacheapi.MaxSecretsPerRequest {
			t.Fatalf("accepted %d references", n)
		}
		seen := map[cacheapi.SecretRef]bool{}
		for _, r := range req.Secrets {
			if seen[r] {
				t.Fatalf("accepted %+v twice", r)
			}
			seen[r] = true
			if _, err := spec.ParseVault(r.Vault, cloud); err != nil {
				t.Fatalf("accepted vault %q: %v", r.Vault, err)
			}
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, err := decodeRequest(again, cloud)
		if err != nil {
			t.Fatalf("the decoded request does not decode again: %v", err)
		}
		if diff := cmp.Diff(req, req2); diff != "" {
			t.Fatalf("decoding is not stable (-first +second):\n%s", diff)
		}
	})
}
