package credprovider

import (
	"bytes"
	"encoding/json"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvinject/kvinject/internal/testkit/golden"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

// nodeRequest is what a kubelet without ServiceAccount tokens for
// credential providers sends: the image alone.
func nodeRequest(image string) []byte {
	b, _ := json.Marshal(map[string]string{"apiVersion": APIVersion, "kind": KindRequest, "image": image})
	return b
}

// TestNodeProvider runs the plugin in node mode as the kubelet does, with
// the node identity's token in a kubelet-like pod directory, against the
// emulator (which federates the identity with apps/puller only).
func TestNodeProvider(t *testing.T) {
	emu, iss := startEmulator(t)
	k := newKubeletDir(t)
	federated := func(c *oidctest.Claims) { c.Namespace, c.ServiceAccount = namespace, "puller" }
	k.write(podUID, DefaultNodeTokenVolume, mint(t, podUID, nodeName, federated))
	base := []string{"--tenant-id", tenantID, "--default-vault", vaultName, "--node-identity", clientID,
		"--pull-secret", "mirror.example.com:5000=mirror-registry-cred", "--pull-secret", "*.example.net=plain-cred",
		"--kubelet-root-dir", k.root, "--node-name", nodeName, "--cache-duration", "1h",
		"--match-images", "mirror.example.com:5000,*.example.net"} // as credential-provider-config writes them
	federatedArgs := append(append([]string{}, base...), "--node-token-subject", "system:serviceaccount:apps:puller")
	// The DaemonSet's own ServiceAccount, which the emulator does not federate.
	unfederated := newKubeletDir(t)
	unfederated.write(podUID, DefaultNodeTokenVolume, mint(t, podUID, nodeName, nil))
	unfederatedArgs := append(append([]string{}, base...), "--kubelet-root-dir", unfederated.root)

	t.Run("pull", func(t *testing.T) {
		before := emu.Stats().TokensIssued
		r := run(t, emu, nodeRequest("mirror.example.com:5000/team/app"), federatedArgs...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
		}
		var resp Response
		if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
			t.Fatal(err)
		}
		want := map[string]AuthConfig{"mirror.example.com:5000": {Username: "mirror-user", Password: mirrorPassword}}
		if diff := cmp.Diff(want, resp.Auth); diff != "" {
			t.Errorf("auth (-want +got):\n%s", diff)
		}
		// The kubelet keeps the answer for the registry as long as the
		// token has left, not the hour asked: one exchange per token.
		if d := resp.CacheDuration.Duration; resp.CacheKeyType != CacheKeyRegistry || d > time.Hour-time.Second || d < 58*time.Minute {
			t.Errorf("cacheKeyType %s cacheDuration %v, want Registry and the token's ~59m left", resp.CacheKeyType, d)
		}
		if n := emu.Stats().TokensIssued - before; n != 1 {
			t.Errorf("%d token exchanges, want 1", n)
		}
		checkKubeletDecodes(t, []byte(r.stdout))
	})
	t.Run("cache duration below the token's", func(t *testing.T) {
		// A user:password credential, for a registry named without a glob.
		r := run(t, emu, nodeRequest("registry.example.net/app"), append(federatedArgs, "--cache-duration", "10m", "--match-images", "registry.example.net")...)
		if r.code != 0 || !strings.Contains(r.stdout, `"cacheDuration": "10m0s"`) || !strings.Contains(r.stdout, "plain-user") {
			t.Errorf("exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
		}
	})

	failures := []struct {
		name     string
		args     []string
		image    string
		wantCode int
		want     []string
	}{
		{name: "node-no-federated-credential", args: unfederatedArgs, image: "mirror.example.com:5000/team/app", wantCode: 1,
			want: []string{"node identity ServiceAccount kvinject-system/kvinject-node-identity", "AADSTS700213", `sub="system:serviceaccount:kvinject-system:kvinject-node-identity"`}},
		{name: "node-no-pattern", args: federatedArgs, image: "ghcr.example.org/team-a/app", wantCode: 1,
			want: []string{"no --pull-secret pattern matches the image (patterns: mirror.example.com:5000, *.example.net)"}},
		{name: "node-registryless-glob", args: federatedArgs, image: "registry.example.net/app", wantCode: 1,
			want: []string{"names no registry", "matched only by the glob \"*.example.net\"", "list registry.example.net in matchImages without a glob"}},
		{name: "node-registryless-no-match-images", args: append(append([]string{}, base[:len(base)-2]...), "--node-token-subject", "system:serviceaccount:apps:puller"), image: "registry.example.net/app", wantCode: 1,
			want: []string{"names no registry", "the provider was not given its matchImages (--match-images)"}},
		{name: "node-no-token", args: append(append([]string{}, federatedArgs...), "--node-token-volume", "other"), image: "mirror.example.com:5000/team/app", wantCode: 1,
			want: []string{"has a projected volume other", "run the kvinject-node-identity DaemonSet on this node"}},
		{name: "node-other-node", args: append(append([]string{}, federatedArgs...), "--node-name", "node-b"), image: "mirror.example.com:5000/team/app", wantCode: 1,
			want: []string{`the token is bound to node "node-a", this node is "node-b"`, "give the provider --node-name"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, emu, nodeRequest(tt.image), tt.args...)
			if r.code != tt.wantCode || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
				}
			}
			checkNoSecrets(t, r.stderr, "")
			stderr := strings.ReplaceAll(strings.ReplaceAll(stable(r.stderr, iss), k.root, "ROOT"), unfederated.root, "ROOT")
			golden := filepath.Join("testdata", tt.name+".stderr")
			checkGolden(t, golden, stderr)
		})
	}
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	goldenCheck(t, path, []byte(got))
}

// checkKubeletDecodes is checkKubeletReads without its cache duration.
func checkKubeletDecodes(t *testing.T, data []byte) {
	t.Helper()
	var resp Response
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil || len(resp.Auth) == 0 {
		t.Errorf("response %s: %v", data, err)
	}
}

// TestNodeFlags: node mode's flags are refused without --node-identity,
// and node mode without what it needs, every problem at once.
func TestNodeFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"node flags without node mode", []string{"--pull-secret", "r.example.com=cred", "--node-name", "n"},
			"kvinject-credential-provider: --node-name, --pull-secret: node mode's flags, without --node-identity\n"},
		{"bad pull secret", []string{"--node-identity", clientID, "--pull-secret", "r.example.com"},
			`invalid value "r.example.com" for flag -pull-secret: "r.example.com" is not PATTERN=REF (like mirror.example.com:5000=mirror-registry-creds)`},
		{"everything missing", []string{"--node-identity", "nope", "--node-name", "n", "--kubelet-root-dir", "var/lib/kubelet", "--node-token-subject", "kvinject-node-identity", "--node-token-volume", "a/b"},
			`kvinject-credential-provider: node identity client id: "nope" is not a GUID (8-4-4-4-12 hexadecimal digits); node mode needs the node identity's tenant id; node mode needs at least one pull secret PATTERN=REF; kubelet root dir "var/lib/kubelet": an absolute path; token volume "a/b": one path segment; token subject "kvinject-node-identity": want system:serviceaccount:NAMESPACE:NAME` + "\n"},
		{"patterns and references", []string{"--node-identity", clientID, "--tenant-id", tenantID, "--node-name", "n", "--pull-secret", "https://r.example.com=cred", "--pull-secret", "r.example.com=cred"},
			`kvinject-credential-provider: pull secret pattern "https://r.example.com": no scheme, just host[:port][/path]; pull secret "cred" names no vault: give a default vault or a full secret URL; pull secret "cred" names no vault: give a default vault or a full secret URL` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(t.Context(), "kvinject-credential-provider", tt.args, Stdio{In: strings.NewReader(""), Out: &out, Err: &errOut, Getenv: func(string) string { return "" }})
			if code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tt.want)
			}
		})
	}
	// The node name defaults to the host name, lower case, as the kubelet's.
	var nf nodeFlags
	fs := newFlagSetForTest(&nf)
	if err := fs.Parse([]string{"--node-identity", clientID}); err != nil {
		t.Fatal(err)
	}
	n, err := nf.options(fs, func() (string, error) { return "Worker-1.Example.Internal", nil })
	if err != nil || n.Token.NodeName != "worker-1.example.internal" {
		t.Errorf("node name %q, %v", n.Token.NodeName, err)
	}
}

func goldenCheck(t *testing.T, path string, got []byte) { golden.Check(t, path, got) }

func newFlagSetForTest(nf *nodeFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	nf.addFlags(fs)
	return fs
}
