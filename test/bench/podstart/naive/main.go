// Command naive is the pod-start benchmark's baseline: what an init container
// does when it uses the Azure SDK for Go the obvious way. It builds
// azidentity's WorkloadIdentityCredential from the AZURE_* variables with
// default options (instance discovery on), an azsecrets.Client with default
// options (the Key Vault 401 challenge flow on the first request), and gets
// the secrets one after another, writing each value to a file. It honours
// HTTPS_PROXY and SSL_CERT_FILE through the SDK's default transport.
//
// It is a bench-only program, built and run by test/bench/podstart:
//
//	naive -vault https://homelab-kv.vault.azure.net -dir DIR name...
//
// At exit it prints {"peakRSSKiB":N} (VmHWM) on stderr, as the agent does.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

func main() {
	vault := flag.String("vault", "", "vault URL")
	dir := flag.String("dir", "", "where to write the files")
	timeout := flag.Duration("timeout", 2*time.Minute, "overall time limit")
	flag.Parse()
	if *vault == "" || *dir == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: naive -vault URL -dir DIR name...")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cred, err := azidentity.NewWorkloadIdentityCredential(nil)
	if err != nil {
		fail(err)
	}
	client, err := azsecrets.NewClient(*vault, cred, nil)
	if err != nil {
		fail(err)
	}
	for _, name := range flag.Args() {
		resp, err := client.GetSecret(ctx, name, "", nil)
		if err != nil {
			fail(err)
		}
		if resp.Value == nil {
			fail(fmt.Errorf("secret %s has no value", name))
		}
		if err := os.WriteFile(filepath.Join(*dir, name), []byte(*resp.Value), 0o400); err != nil {
			fail(err)
		}
	}
	fmt.Fprintf(os.Stderr, "{\"peakRSSKiB\":%d}\n", vmHWM())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &n)
			return n
		}
	}
	return 0
}
