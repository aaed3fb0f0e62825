package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kvinject/kvinject/internal/entrypoint"
)

func runEntrypoint(ctx context.Context, args []string, io stdio) int {
	var o entrypoint.Options
	fs := flag.NewFlagSet("kvinject entrypoint", flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintln(io.err, `Usage: kvinject entrypoint [flags] IMAGE...

Reads each image's ENTRYPOINT and CMD from its registry and prints the pod annotation
kvinject.io/entrypoint-<container> that the exec wrapper needs for a container without a
command: ENTRYPOINT then CMD, or with --entrypoint-only (for a container that has args)
ENTRYPOINT alone. Credentials come from your docker or podman config (docker login),
CAs from the system and --ca-file. Exits 1 when an image cannot be read.`)
		fs.PrintDefaults()
	}
	o.AddFlags(fs)
	container := fs.String("container", "", "the container's name (one IMAGE only); default the last path element of the image's repository")
	only := fs.Bool("entrypoint-only", false, "print ENTRYPOINT without CMD, for a container that has args")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if *container != "" && fs.NArg() > 1 {
		fmt.Fprintf(io.err, "kvinject entrypoint: --container names the container of one image; %d images given: run once per image\n", fs.NArg())
		return 2
	}
	client, code := newEntrypointClient(&o, "kvinject entrypoint", io.err)
	if client == nil {
		return code
	}
	reqs := make([]entrypoint.Request, fs.NArg())
	for i, image := range fs.Args() {
		reqs[i] = entrypoint.Request{Image: image, Container: *container, EntrypointOnly: *only}
	}
	anns, err := client.Resolve(ctx, reqs)
	seen := map[string]string{} // container -> image
	var dups []error
	for _, a := range anns {
		if a.Program == nil {
			continue
		}
		if other, dup := seen[a.Container]; dup {
			dups = append(dups, fmt.Errorf("images %s and %s both give the container name %s: run once per image with --container", other, a.Image, a.Container))
			continue
		}
		seen[a.Container] = a.Image
		fmt.Fprintln(io.out, a.Line())
	}
	if err = errors.Join(append([]error{err}, dups...)...); err != nil {
		printEntrypointErrors(io.err, "kvinject entrypoint", err)
		return 1
	}
	return 0
}

// newEntrypointClient completes and checks the registry options; nil and
// the exit code when they are wrong.
func newEntrypointClient(o *entrypoint.Options, cmd string, w io.Writer) (*entrypoint.Client, int) {
	o.Complete()
	if err := o.Validate(); err != nil {
		fmt.Fprintf(w, "%s: %v\n", cmd, err)
		return nil, 2
	}
	c, err := entrypoint.New(*o)
	if err != nil {
		fmt.Fprintf(w, "%s: %v\n", cmd, err)
		return nil, 2
	}
	return c, 0
}

// printEntrypointErrors prints one line per image that failed, with the
// flag that fixes it where one does.
func printEntrypointErrors(w io.Writer, cmd string, err error) {
	for _, e := range flatten(err) {
		hint := ""
		var ie *entrypoint.ImageError
		if errors.As(e, &ie) {
			switch ie.Kind {
			case entrypoint.KindUnknownAuthority:
				hint = " [--ca-file FILE with the registry's CA]"
			case entrypoint.KindPlatform:
				hint = " [--platform]"
			case entrypoint.KindUnreachable:
				hint = " [--timeout for a slow registry]"
			}
		}
		fmt.Fprintf(w, "%s: %v%s\n", cmd, e, hint)
	}
}

// flatten lists the errors of joined errors, depth first.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
