package keyvault

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestNewReaderOptions: NewReader refuses what could not sign in, before
// any request. Reads themselves are tested end to end, against the
// emulator, by the kubelet credential provider (credprovider).
func TestNewReaderOptions(t *testing.T) {
	ok := ReaderOptions{ClientID: testClient, TenantID: testTenant, ServiceAccountToken: "a.b.c"}
	tests := []struct {
		name    string
		mutate  func(*ReaderOptions)
		wantErr string
	}{
		{"valid", func(*ReaderOptions) {}, ""},
		{"authority host from the environment", func(o *ReaderOptions) { o.AuthorityHost = "https://login.example.com" }, ""},
		{"bad client id", func(o *ReaderOptions) { o.ClientID = "web" }, `"web" is not a GUID (8-4-4-4-12 hexadecimal digits)`},
		{"no tenant", func(o *ReaderOptions) { o.TenantID = "" }, "tenant id is empty or too long"},
		{"no token", func(o *ReaderOptions) { o.ServiceAccountToken = "" }, "no service-account token"},
		{"http authority", func(o *ReaderOptions) { o.AuthorityHost = "http://login.example.com/" },
			`authority host "http://login.example.com/" must be an https URL with a host and no user, query or fragment, like https://login.microsoftonline.com/`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mutate(&o)
			r, err := NewReader(o)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				r.Close()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
