package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateProxyURL(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		wantCreds bool
		ok        bool
	}{
		{"http://proxy.corp:3128", false, true},
		{"https://proxy.corp", false, true},
		{"http://user:s3cr3t-pw@proxy.corp:3128", true, false},
		{"http://user@proxy.corp:3128", true, false},
		{"user:s3cr3t-pw@proxy.corp:3128", true, false}, // Go's proxy reader adds http://
		{"https://us%40er:s3cr3t-pw@proxy.corp", true, false},
		{"proxy.corp:3128", false, false},
		{"socks5://proxy.corp:1080", false, false},
		{"http://", false, false},
		{"http://proxy.corp:3128/%zz", false, false},
	} {
		err := ValidateProxyURL(tc.raw)
		if (err == nil) != tc.ok || errors.Is(err, ErrProxyCredentials) != tc.wantCreds {
			t.Errorf("%q: %v, want ok=%v, credentials refused=%v", tc.raw, err, tc.ok, tc.wantCreds)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("%q: the error quotes the password: %v", tc.raw, err)
		}
	}
}

// FuzzValidateProxyURL: any value; an error is one of three fixed texts,
// so it never quotes any part of the value.
func FuzzValidateProxyURL(f *testing.F) {
	for _, s := range []string{"http://proxy:3128", "http://u:pw@proxy:3128", "u:pw@proxy:3128", "%zz"} {
		f.Add(s)
	}
	fixed := map[string]bool{ErrProxyCredentials.Error(): true, "not a URL": true, "must be an http:// or https:// URL with a host": true}
	f.Fuzz(func(t *testing.T, raw string) {
		if err := ValidateProxyURL(raw); err != nil && !fixed[err.Error()] {
			t.Fatalf("the error is not one of the fixed texts: %v", err)
		}
	})
}
