package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

// stdio is what a command may touch of the process, passed explicitly so
// that commands run in tests exactly as in production.
type stdio struct {
	in     io.Reader
	out    io.Writer
	err    io.Writer
	getenv func(string) string
}

// command is one subcommand. run returns the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, io stdio) int
}

func commands() map[string]command {
	return map[string]command{
		"agent":           {"the init container: fetch the pod's Key Vault secrets into files", runAgent},
		"webhook":         {"the mutating admission webhook server", runWebhook},
		"cache":           {"the cluster cache: Key Vault values for proven pods, read once per TTL, served through outages", runCache},
		"inject":          {"preview offline what the webhook does to Pods and workloads", runInject},
		"emulator":        {"run the Entra ID and Key Vault emulator (local demo and tests)", runEmulator},
		"convert-eso":     {"print how to move External Secrets Operator setups to kvinject", runConvertESO},
		"entrypoint":      {"print the kvinject.io/entrypoint- annotation from images' ENTRYPOINT and CMD in their registries", runEntrypoint},
		"version":         {"print the version", runVersion},
		"check-injection": {"check that the webhook injects an opted-in pod (server-side dry run; helm test runs it)", runCheckInjection},
		"node-identity":   {"the kvinject-node-identity DaemonSet's container: keeps the node's token for the credential provider's node mode", runNodeIdentity},

		"credential-provider-config": {"print the kubelet's CredentialProviderConfig for kvinject-credential-provider", runCredentialProviderConfig},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func runVersion(_ context.Context, _ []string, io stdio) int {
	fmt.Fprintln(io.out, "kvinject", version)
	return 0
}

func run(ctx context.Context, args []string, io stdio) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(io.err, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(io.err, "kvinject: unknown command %q\n", args[0])
		usage(io.err, cmds)
		return 2
	}
	return c.run(ctx, args[1:], io)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	width := 0
	for n := range cmds {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("Usage: kvinject COMMAND [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, n, cmds[n].summary)
	}
	b.WriteString("\nRun 'kvinject COMMAND -h' for a command's flags.\n")
	io.WriteString(w, b.String())
}
