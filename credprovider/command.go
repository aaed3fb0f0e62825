package credprovider

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
)

// Stdio is what the plugin may touch of the process, passed explicitly so
// that it runs in tests exactly as under the kubelet.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
	Getenv   func(string) string
	// Hostname is the default node name in node mode; nil: os.Hostname.
	Hostname func() (string, error)
}

// PullSecretList is a repeatable PATTERN=REF flag value (the provider's and
// credential-provider-config's --pull-secret).
type PullSecretList []NodePullSecret

func (l *PullSecretList) String() string {
	s := make([]string, len(*l))
	for i, ps := range *l {
		s[i] = ps.String()
	}
	return strings.Join(s, ",")
}

func (l *PullSecretList) Set(v string) error {
	ps, err := ParseNodePullSecret(v)
	if err != nil {
		return err
	}
	*l = append(*l, ps)
	return nil
}

// nodeFlags are node mode's flags.
type nodeFlags struct {
	clientID, rootDir, volume, subject, nodeName string
	pullSecrets                                  PullSecretList
}

func (f *nodeFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.clientID, "node-identity", "", "node mode: the client id of the node identity every matching pull signs in as, for kubelets that send no ServiceAccount token")
	fs.Var(&f.pullSecrets, "pull-secret", "node mode: PATTERN=REF, the Key Vault secret holding the credential for images matching PATTERN (repeatable; the first match wins)")
	fs.StringVar(&f.rootDir, "kubelet-root-dir", DefaultKubeletRootDir, "node mode: the kubelet's --root-dir, where the node identity pod's token is")
	fs.StringVar(&f.volume, "node-token-volume", DefaultNodeTokenVolume, "node mode: the node identity pod's projected token volume")
	fs.StringVar(&f.subject, "node-token-subject", DefaultNodeTokenSubject, "node mode: the ServiceAccount the token must be of")
	fs.StringVar(&f.nodeName, "node-name", "", "node mode: this node's name, which the token's pod binding must name (default: the host name, lower case, as the kubelet's)")
}

// options are node mode's options, or nil when --node-identity is unset
// (then no other node flag may be set).
func (f *nodeFlags) options(fs *flag.FlagSet, hostname func() (string, error)) (*NodeOptions, error) {
	if f.clientID == "" {
		var set []string
		fs.Visit(func(fl *flag.Flag) {
			switch fl.Name {
			case "pull-secret", "kubelet-root-dir", "node-token-volume", "node-token-subject", "node-name":
				set = append(set, "--"+fl.Name)
			}
		})
		if len(set) > 0 {
			return nil, fmt.Errorf("%s: node mode's flags, without --node-identity", strings.Join(set, ", "))
		}
		return nil, nil
	}
	name := strings.TrimSpace(f.nodeName)
	if name == "" {
		if hostname == nil {
			hostname = os.Hostname
		}
		h, err := hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w: give --node-name", err)
		}
		name = strings.ToLower(strings.TrimSpace(h))
	}
	return &NodeOptions{
		ClientID:    strings.TrimSpace(f.clientID),
		PullSecrets: f.pullSecrets,
		Token: NodeTokenSource{RootDir: f.rootDir, Volume: f.volume, Subject: f.subject,
			Audience: spec.TokenAudience, NodeName: name},
	}, nil
}

// Main is the plugin's command line, run by the kubelet with the args and
// env of its CredentialProviderConfig; prog names it in messages. Exit
// codes: 0 a response on stdout, 1 no credential (one line on stderr), 2
// bad flags or a request this plugin cannot read.
func Main(ctx context.Context, prog string, args []string, stdio Stdio) int {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	tenantID := fs.String("tenant-id", "", "Entra ID tenant for ServiceAccounts without the annotation "+spec.SAAnnotationTenantID)
	defaultVault := fs.String("default-vault", "", "vault name or URL that a short "+spec.SAAnnotationPullSecret+" reference reads from")
	cloud := spec.PublicCloud()
	fs.Var(&cloud, "cloud", spec.CloudUsage())
	cacheDuration := fs.Duration("cache-duration", DefaultCacheDuration, "how long the kubelet keeps a credential, per ServiceAccount and registry (0: not at all)")
	timeout := fs.Duration("timeout", DefaultTimeout, "time limit of one run, retries included (the kubelet stops a plugin after 1m)")
	var nf nodeFlags
	nf.addFlags(fs)
	var matchImages []string
	fs.Func("match-images", "the config's matchImages, comma-separated: a credential without a registry answers only for a registry an entry without a glob names (repeatable)", func(v string) error {
		for _, m := range strings.Split(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				matchImages = append(matchImages, m)
			}
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags] < CredentialProviderRequest\n\nThe kubelet's image credential provider: reads a %s %s on stdin, with the pod's\nServiceAccount token, and writes the registry credential from the Key Vault secret named by the\nServiceAccount annotation %s to stdout.\nWith --node-identity (node mode, for kubelets that send no token), every matching pull signs in as\nthe node identity with the token of the kvinject-node-identity pod on this node, and reads the secret\nof --pull-secret.\n\nFlags:\n",
			prog, APIVersion, KindRequest, spec.SAAnnotationPullSecret)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stdio.Err, "%s: unexpected arguments %q\n", prog, fs.Args())
		return 2
	}
	node, err := nf.options(fs, stdio.Hostname)
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s: %v\n", prog, err)
		return 2
	}
	p, err := New(Options{
		Node:          node,
		TenantID:      strings.TrimSpace(*tenantID),
		DefaultVault:  strings.TrimSpace(*defaultVault),
		Cloud:         cloud,
		AuthorityHost: strings.TrimSpace(stdio.Getenv(spec.EnvAuthorityHost)),
		CacheDuration: *cacheDuration,
		Timeout:       *timeout,
		MatchImages:   matchImages,
	})
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s: %s\n", prog, strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	req, err := DecodeRequest(stdio.In)
	if err != nil {
		fmt.Fprintf(stdio.Err, "error: %v\n", err)
		return 2
	}
	resp, err := p.Provide(ctx, req)
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			fmt.Fprintln(stdio.Err, pe.Error())
		} else {
			fmt.Fprintln(stdio.Err, "error: no credential")
		}
		return 1
	}
	if err := resp.Encode(stdio.Out); err != nil {
		fmt.Fprintf(stdio.Err, "error: %v\n", err)
		return 1
	}
	return 0
}
