package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kvinject/kvinject/internal/preview"
	"github.com/kvinject/kvinject/internal/spec"
	"github.com/kvinject/kvinject/internal/webhookserver"
	"github.com/kvinject/kvinject/webhook"
)

func runInject(_ context.Context, args []string, io stdio) int {
	o := webhook.DefaultOptions()
	o.AgentImage = "kvinject:" + version
	fs := flag.NewFlagSet("kvinject inject", flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintln(io.err, "Usage: kvinject inject -f FILE|- [flags]\n\nPrints Pods and workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)\nas the webhook would admit them, or the webhook's denial.")
		fs.PrintDefaults()
	}
	o.AddFlags(fs)
	file := fs.String("f", "", "YAML file to read, - for standard input")
	ns := fs.String("namespace", "default", "namespace of objects that name none")
	saClientID := fs.String("sa-client-id", "", "stands in for the ServiceAccount annotation "+spec.SAAnnotationClientID)
	saTenantID := fs.String("sa-tenant-id", "", "stands in for the ServiceAccount annotation "+spec.SAAnnotationTenantID)
	fs.StringVar(&o.KubeVersion, "kube-version", webhook.NewestKubeVersion, "the API server's version, which decides what the webhook may add (native sidecars from 1.29)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	err := webhookserver.LoadCacheCA(&o)
	if err == nil {
		o.Complete()
		err = o.Validate()
	}
	if err != nil {
		fmt.Fprintf(io.err, "kvinject inject: %v\n", err)
		return 2
	}
	in, closeIn, err := openInput(*file, io.in)
	if err != nil {
		fmt.Fprintf(io.err, "kvinject inject: %v\n", err)
		return 1
	}
	defer closeIn()
	sa := map[string]string{}
	if *saClientID != "" {
		sa[spec.SAAnnotationClientID] = *saClientID
	}
	if *saTenantID != "" {
		sa[spec.SAAnnotationTenantID] = *saTenantID
	}
	err = preview.Preview(in, io.out, io.err, preview.Options{Mutation: &o, Namespace: *ns, ServiceAccountAnnotations: sa})
	if err != nil {
		fmt.Fprintf(io.err, "kvinject inject: %v\n", err)
		return 1
	}
	return 0
}

func openInput(name string, stdin io.Reader) (io.Reader, func(), error) {
	if name == "-" {
		return stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
