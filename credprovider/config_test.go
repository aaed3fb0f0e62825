package credprovider

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/internal/spec"
)

// TestConfigRefusesProxyCredentials: the config is a file on every node
// (or a MachineConfig) that others read, so a proxy password must not go
// into it, and the refusal must not repeat it.
func TestConfigRefusesProxyCredentials(t *testing.T) {
	for _, proxy := range []string{
		"http://puller:s3cr3t-pw@proxy.internal:3128",
		"https://puller:s3cr3t-pw@proxy.internal",
		"puller:s3cr3t-pw@proxy.internal:3128", // no scheme: Go's proxy reader adds http://
		"http://s3cr3t-pw@proxy.internal:3128",
	} {
		var out bytes.Buffer
		err := WriteKubeletConfig(&out, ConfigOptions{MatchImages: []string{"mirror.example.com"}, HTTPSProxy: proxy, KubeMinor: 37})
		if !errors.Is(err, spec.ErrProxyCredentials) {
			t.Errorf("%q: %v, want the proxy's credentials refused", proxy, err)
		}
		for _, text := range []string{out.String(), errText(err)} {
			if strings.Contains(text, "s3cr3t-pw") {
				t.Errorf("%q: the password is repeated: %q", proxy, text)
			}
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
