package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kvinject/kvinject/internal/entrypoint"
	"github.com/kvinject/kvinject/internal/esoconvert"
	"github.com/kvinject/kvinject/webhook"
)

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return fmt.Sprint(*f) }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func runConvertESO(ctx context.Context, args []string, io stdio) int {
	var o esoconvert.Options
	var reg entrypoint.Options
	var files fileList
	fs := flag.NewFlagSet("kvinject convert-eso", flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintln(io.err, "Usage: kvinject convert-eso -f FILE|- [-f FILE ...] [flags]\n\nReads ExternalSecrets, their SecretStores or ClusterSecretStores, ServiceAccounts and the\nworkloads that read the synced Secrets, and prints how to move them to kvinject.\nExits 1 when the input has broken references.")
		fs.PrintDefaults()
	}
	fs.Var(&files, "f", "YAML file to read (repeatable), - for standard input")
	fs.StringVar(&o.Issuer, "issuer", "", "the cluster's service-account issuer URL, for the federated credential")
	fs.StringVar(&o.IdentityName, "identity-name", "", "the managed identity's name")
	fs.StringVar(&o.ResourceGroup, "resource-group", "", "the managed identity's resource group")
	kubeVersion := fs.String("kube-version", "", "the cluster's Kubernetes version (1.33), as the webhook decides: env variables go through valueFrom.fileKeyRef from 1.35, else the exec wrapper; before 1.34 image pull secrets move to the credential provider's node mode; default: env deliveries say both, pulls use the pod's token")
	resolve := fs.Bool("resolve-entrypoints", false, "read the images of containers the exec wrapper runs without a command and add their kvinject.io/entrypoint- annotations (registry flags as for kvinject entrypoint)")
	reg.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(files) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *kubeVersion != "" {
		minor, err := webhook.KubeMinor(*kubeVersion)
		if err != nil {
			fmt.Fprintf(io.err, "kvinject convert-eso: --kube-version: %v\n", err)
			return 2
		}
		o.KubeMinor = minor
	}
	var client *entrypoint.Client
	if *resolve {
		var code int
		if client, code = newEntrypointClient(&reg, "kvinject convert-eso", io.err); client == nil {
			return code
		}
	}
	var in esoconvert.Input
	for _, name := range files {
		r, closeIn, err := openInput(name, io.in)
		if err != nil {
			fmt.Fprintf(io.err, "kvinject convert-eso: %v\n", err)
			return 1
		}
		err = in.Read(r, name)
		closeIn()
		if err != nil {
			fmt.Fprintf(io.err, "kvinject convert-eso: %v\n", err)
			return 1
		}
	}
	res := esoconvert.Convert(&in)
	code := 0
	if client != nil {
		if err := esoconvert.ResolveEntrypoints(ctx, &res, o, client); err != nil {
			printEntrypointErrors(io.err, "kvinject convert-eso", err)
			code = 1
		}
	}
	if err := esoconvert.Write(io.out, res, o); err != nil {
		fmt.Fprintf(io.err, "kvinject convert-eso: %v\n", err)
		return 1
	}
	if len(res.Problems) > 0 {
		return 1
	}
	return code
}
