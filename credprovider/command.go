package credprovider

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
)

// Stdio is what the plugin may touch of the process, passed explicitly so
// that it runs in tests exactly as under the kubelet.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
	Getenv   func(string) string
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
	cloudName := fs.String("cloud", spec.DefaultCloud, "AzurePublicCloud, AzureChinaCloud or AzureUSGovernment")
	cacheDuration := fs.Duration("cache-duration", DefaultCacheDuration, "how long the kubelet keeps a credential, per ServiceAccount and registry (0: not at all)")
	timeout := fs.Duration("timeout", DefaultTimeout, "time limit of one run, retries included (the kubelet stops a plugin after 1m)")
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
		fmt.Fprintf(fs.Output(), "Usage: %s [flags] < CredentialProviderRequest\n\nThe kubelet's image credential provider: reads a %s %s on stdin, with the pod's\nServiceAccount token, and writes the registry credential from the Key Vault secret named by the\nServiceAccount annotation %s to stdout.\n\nFlags:\n",
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
	cloud, err := spec.LookupCloud(*cloudName)
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s: --cloud: %v\n", prog, err)
		return 2
	}
	p, err := New(Options{
		TenantID:      strings.TrimSpace(*tenantID),
		DefaultVault:  strings.TrimSpace(*defaultVault),
		Cloud:         cloud,
		AuthorityHost: strings.TrimSpace(stdio.Getenv(spec.EnvAuthorityHost)),
		CacheDuration: *cacheDuration,
		Timeout:       *timeout,
		MatchImages:   matchImages,
	})
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s: %v\n", prog, err)
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
