package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kvinject/kvinject/internal/esoconvert"
	"github.com/kvinject/kvinject/webhook"
)

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return fmt.Sprint(*f) }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func runConvertESO(_ context.Context, args []string, io stdio) int {
	var o esoconvert.Options
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
	kubeVersion := fs.String("kube-version", webhook.NewestKubeVersion, "the kubelets' Kubernetes version: before 1.34 image pull secrets move to the credential provider's node mode")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.KubeMinor, err = webhook.KubeMinor(*kubeVersion); err != nil {
		fmt.Fprintf(io.err, "kvinject convert-eso: --kube-version: %v\n", err)
		return 2
	}
	if len(files) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
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
	if err := esoconvert.Write(io.out, res, o); err != nil {
		fmt.Fprintf(io.err, "kvinject convert-eso: %v\n", err)
		return 1
	}
	if len(res.Problems) > 0 {
		return 1
	}
	return 0
}
