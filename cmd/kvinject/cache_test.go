package main

import (
	"strings"
	"testing"
)

// TestCacheFlags: bad settings of `kvinject cache` are refused before it
// reaches the API server, each named.
func TestCacheFlags(t *testing.T) {
	code, _, errOut := runCommand(t, "", "cache", "--port", "0", "--ttl", "-1s", "--max-entries", "-3", "--cloud", "Mars")
	// A cloud is parsed as the flag is, like a duration.
	want := "invalid value \"Mars\" for flag -cloud: unknown cloud \"Mars\" (want one of AzureChinaCloud, AzurePublicCloud, AzureUSGovernment)"
	if code != 2 || !strings.HasPrefix(errOut, want) {
		t.Errorf("unknown cloud: exit %d, %q; want 2, %q...", code, errOut, want)
	}
	code, _, errOut = runCommand(t, "", "cache", "--port", "0", "--ttl", "-1s", "--max-entries", "-3")
	for _, w := range []string{"TTL -1s is not positive", "max entries -3 is not positive", "--port 0 is not a port"} {
		if code != 2 || !strings.Contains(errOut, w) {
			t.Errorf("exit %d, stderr %q: want 2 and %q", code, errOut, w)
		}
	}
}
