package credprovider

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/internal/testkit/emutest"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

const (
	nodeName   = "node-a"
	nodeSub    = DefaultNodeTokenSubject
	podUID     = "0b5cfd6e-6a53-4a4e-9d0c-000000000001"
	otherUID   = "0b5cfd6e-6a53-4a4e-9d0c-000000000002"
	nodeNS     = "kvinject-system"
	nodeSAName = "kvinject-node-identity"
)

// kubeletDir lays out pods/<uid>/volumes/kubernetes.io~projected/<volume>
// as the kubelet's atomic writer does: token -> ..data/token, ..data ->
// a timestamped directory holding the file.
type kubeletDir struct {
	t    *testing.T
	root string
}

func newKubeletDir(t *testing.T) kubeletDir {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "pods"), 0o750); err != nil {
		t.Fatal(err)
	}
	return kubeletDir{t: t, root: root}
}

func (k kubeletDir) volDir(uid, volume string) string {
	return filepath.Join(k.root, "pods", uid, "volumes", "kubernetes.io~projected", volume)
}

// write puts content as the token of pod uid's volume.
func (k kubeletDir) write(uid, volume string, content []byte) string {
	k.t.Helper()
	vol := k.volDir(uid, volume)
	ts := filepath.Join(vol, "..2026_12_07_10_00_00.000000001")
	if err := os.MkdirAll(ts, 0o755); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "token"), content, 0o600); err != nil {
		k.t.Fatal(err)
	}
	for _, l := range [][2]string{{filepath.Base(ts), "..data"}, {"..data/token", "token"}} {
		if err := os.Symlink(l[0], filepath.Join(vol, l[1])); err != nil {
			k.t.Fatal(err)
		}
	}
	return filepath.Join(vol, "token")
}

// mint is a node identity token bound to pod uid on node, changed by edit.
func mint(t *testing.T, uid, node string, edit func(*oidctest.Claims)) []byte {
	t.Helper()
	c := oidctest.Claims{Namespace: nodeNS, ServiceAccount: nodeSAName, PodName: "kvinject-node-identity-x7k2p", PodUID: uid, NodeName: node, NodeUID: "n-1"}
	if edit != nil {
		edit(&c)
	}
	tok, err := emutest.Issuer(t).Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok + "\n")
}

func (k kubeletDir) source() NodeTokenSource {
	return NodeTokenSource{RootDir: k.root, Volume: DefaultNodeTokenVolume, Path: "token", Subject: nodeSub, Audience: "api://AzureADTokenExchange", NodeName: nodeName, Now: time.Now}
}

// TestNodeTokenFind: every refusal of node mode's token path, and which
// token is chosen among several.
func TestNodeTokenFind(t *testing.T) {
	now := time.Now()
	vol := DefaultNodeTokenVolume
	tests := []struct {
		name    string
		setup   func(k kubeletDir) NodeTokenSource
		wantUID string  // the chosen token's pod
		wantErr []error // each must be in the error's chain
		wantMsg string  // a part of the error's text
	}{
		{name: "one token", wantUID: podUID, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, nil))
			return k.source()
		}},
		{name: "the one that expires last", wantUID: otherUID, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Lifetime = 20 * time.Minute }))
			k.write(otherUID, vol, mint(t, otherUID, nodeName, nil))
			return k.source()
		}},
		{name: "a bad one beside a good one", wantUID: otherUID, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Audience = []string{"kubernetes"} }))
			k.write(otherUID, vol, mint(t, otherUID, nodeName, nil))
			return k.source()
		}},
		{name: "no node claim (Kubernetes 1.29)", wantUID: podUID, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, "", func(c *oidctest.Claims) { c.NodeUID = "" }))
			return k.source()
		}},
		{name: "no pod has the volume", wantErr: []error{ErrNoNodeToken}, wantMsg: "has a projected volume kvinject-node-token", setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, "kube-api-access-abcde", mint(t, podUID, nodeName, nil))
			return k.source()
		}},
		{name: "no pods at all", wantErr: []error{ErrNoNodeToken}, setup: func(k kubeletDir) NodeTokenSource { return k.source() }},
		{name: "volume without the token path", wantErr: []error{ErrNoNodeToken}, wantMsg: "sa-token: no token file in the volume", setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, nil))
			s := k.source()
			s.Path = "sa-token"
			return s
		}},
		{name: "unreadable pod directory", wantErr: []error{os.ErrNotExist}, wantMsg: "cannot be read", setup: func(k kubeletDir) NodeTokenSource {
			s := k.source()
			s.RootDir = filepath.Join(k.root, "elsewhere")
			return s
		}},
		{name: "pods is a file", wantMsg: "not a directory", setup: func(k kubeletDir) NodeTokenSource {
			root := filepath.Join(k.root, "file-root")
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "pods"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s := k.source()
			s.RootDir = root
			return s
		}},
		{name: "token is a directory", wantErr: []error{ErrNodeTokenRead}, setup: func(k kubeletDir) NodeTokenSource {
			if err := os.MkdirAll(filepath.Join(k.volDir(podUID, vol), "token"), 0o755); err != nil {
				t.Fatal(err)
			}
			return k.source()
		}},
		{name: "expired", wantErr: []error{ErrNodeTokenExpired}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.IssuedAt = now.Add(-2 * time.Hour) }))
			return k.source()
		}},
		{name: "expiring in seconds", wantErr: []error{ErrNodeTokenExpired}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Expiry = now.Add(10 * time.Second) }))
			return k.source()
		}},
		{name: "not valid yet", wantErr: []error{ErrNodeTokenNotYet}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.IssuedAt = now.Add(time.Hour) }))
			return k.source()
		}},
		{name: "lives longer than a day", wantErr: []error{ErrNodeTokenMalformed}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Lifetime = 48 * time.Hour }))
			return k.source()
		}},
		{name: "wrong audience", wantErr: []error{ErrNodeTokenAudience}, wantMsg: `audience ["kubernetes"], want api://AzureADTokenExchange`, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Audience = []string{"kubernetes"} }))
			return k.source()
		}},
		{name: "wrong subject", wantErr: []error{ErrNodeTokenSubject}, wantMsg: `subject "system:serviceaccount:apps:puller"`, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.Namespace, c.ServiceAccount = "apps", "puller" }))
			return k.source()
		}},
		{name: "other node", wantErr: []error{ErrNodeTokenNode}, wantMsg: `the token is bound to node "node-b", this node is "node-a"`, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, "node-b", nil))
			return k.source()
		}},
		{name: "copied into another pod's directory", wantErr: []error{ErrNodeTokenPod}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, otherUID, nodeName, nil))
			return k.source()
		}},
		{name: "not bound to a pod", wantErr: []error{ErrNodeTokenPod}, wantMsg: "no kubernetes.io.pod claim", setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, "", nodeName, func(c *oidctest.Claims) { c.PodName = "" }))
			return k.source()
		}},
		{name: "not a JWT", wantErr: []error{ErrNodeTokenMalformed}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, []byte("hunter2"))
			return k.source()
		}},
		{name: "oversize file", wantErr: []error{ErrNodeTokenTooLarge}, setup: func(k kubeletDir) NodeTokenSource {
			tok := mint(t, podUID, nodeName, nil)
			k.write(podUID, vol, append(tok, make([]byte, MaxNodeTokenBytes)...))
			return k.source()
		}},
		{name: "link out of the volume", wantErr: []error{ErrNodeTokenEscapes}, setup: func(k kubeletDir) NodeTokenSource {
			outside := filepath.Join(k.root, "elsewhere-token")
			if err := os.WriteFile(outside, mint(t, podUID, nodeName, nil), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(k.volDir(podUID, vol), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(k.volDir(podUID, vol), "token")); err != nil {
				t.Fatal(err)
			}
			return k.source()
		}},
		{name: "every reason listed", wantErr: []error{ErrNodeTokenExpired, ErrNodeTokenNode}, setup: func(k kubeletDir) NodeTokenSource {
			k.write(podUID, vol, mint(t, podUID, nodeName, func(c *oidctest.Claims) { c.IssuedAt = now.Add(-2 * time.Hour) }))
			k.write(otherUID, vol, mint(t, otherUID, "node-b", nil))
			return k.source()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKubeletDir(t)
			got, err := tt.setup(k).Find()
			if tt.wantUID != "" {
				if err != nil {
					t.Fatalf("Find: %v", err)
				}
				if got.PodUID != tt.wantUID || !strings.HasPrefix(got.Token, "eyJ") || strings.ContainsAny(got.Token, " \n") {
					t.Errorf("got %v (token %d bytes), want pod %s", got, len(got.Token), tt.wantUID)
				}
				if strings.Contains(got.String(), got.Token) {
					t.Error("String prints the token")
				}
				return
			}
			var te *NodeTokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *NodeTokenError", err)
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %q is not %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "eyJ") || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the file: %s", err)
			}
		})
	}
}

// FuzzParseNodeClaims: any file content is refused or read, never a panic,
// and an error never quotes it.
func FuzzParseNodeClaims(f *testing.F) {
	f.Add("a.eyJzdWIiOiJ4In0.c")
	f.Add(`a.eyJrdWJlcm5ldGVzLmlvIjp7InBvZCI6eyJ1aWQiOiJ1In19LCJhdWQiOjF9.c`)
	f.Add("...")
	f.Fuzz(func(t *testing.T, s string) {
		_, err := parseNodeClaims(s)
		if err != nil && len(s) > 8 && strings.Contains(err.Error(), s) {
			t.Errorf("the error quotes the input: %v", err)
		}
	})
}
