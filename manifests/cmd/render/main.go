// Command render writes kvinject's rendered manifests, or pins the image tag in
// manifests/base/kustomization.yaml. It needs no kustomize or kubectl binary.
//
//	go run ./manifests/cmd/render -tag v0.1.0 -o _out/manifests      # one YAML file per installation
//	go run ./manifests/cmd/render -set-tag v0.1.0                      # edit base/kustomization.yaml
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvinject/kvinject/manifests"
)

func main() {
	tag := flag.String("tag", "", "image tag to render with (default: the one in base/kustomization.yaml)")
	out := flag.String("o", "", "output directory: <source>.yaml for each overlay, with-cache-<source>.yaml for each with the cache")
	setTag := flag.String("set-tag", "", "write this image tag into base/kustomization.yaml")
	dir := flag.String("dir", "manifests", "the manifests directory (for -set-tag)")
	flag.Parse()
	if err := run(*tag, *out, *setTag, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(tag, out, setTag, dir string) error {
	if setTag != "" {
		for _, k := range []string{manifests.BaseKustomization, manifests.NodeIdentityKustomization} {
			p := filepath.Join(dir, filepath.FromSlash(k))
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if b, err = manifests.SetImageTag(b, setTag); err != nil {
				return err
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
			fmt.Println("set", manifests.ImageName+":"+setTag, "in", p)
		}
	}
	if out == "" {
		if setTag == "" {
			return fmt.Errorf("nothing to do: give -o DIR and/or -set-tag TAG")
		}
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, o := range append(append(append([]string(nil), manifests.Overlays...), manifests.WithCache...), manifests.NodeIdentity) {
		y, err := manifests.Render(o, tag)
		if err != nil {
			return err
		}
		name := strings.ReplaceAll(strings.TrimPrefix(o, "overlays/"), "/", "-") + ".yaml"
		if err := os.WriteFile(filepath.Join(out, name), y, 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(out, name))
	}
	return nil
}
