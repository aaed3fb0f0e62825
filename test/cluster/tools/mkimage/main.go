// Command mkimage builds a container image from static files without Docker or a registry, and
// writes it as a docker-archive tarball that `ctr images import` (and `docker load`) accept.
//
//	mkimage -o app.tar -tag example.com/app:dev -binary ./app [-ca-bundle /etc/ssl/certs/ca-certificates.crt]
//	        [-entrypoint /app,arg] [-cmd a,b] [-user 65532:65532] [-env K=V] [-file SRC:DST[:MODE]] [-tag ...]
//
// The image has one layer on an empty base: the binary (at -path, default /<basename>, mode 0755),
// the CA bundle at /etc/ssl/certs/ca-certificates.crt when given, extra -file entries, a minimal
// /etc/passwd and /etc/group (root, nonroot 65532) and a world-writable /tmp. File times are fixed,
// so the same inputs give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

var epoch = time.Unix(0, 0).UTC()

func main() {
	var tags, envs, files list
	out := flag.String("o", "", "output tarball (docker-archive)")
	binary := flag.String("binary", "", "static binary to put in the image")
	binPath := flag.String("path", "", "path of the binary in the image (default /<basename of -binary>)")
	caBundle := flag.String("ca-bundle", "", "optional CA bundle, installed as /etc/ssl/certs/ca-certificates.crt")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint (default: the binary's path)")
	cmd := flag.String("cmd", "", "comma-separated default arguments")
	user := flag.String("user", "65532:65532", "user[:group] the image runs as")
	arch := flag.String("arch", runtime.GOARCH, "image architecture")
	flag.Var(&tags, "tag", "image reference, e.g. example.com/app:dev (repeatable; at least one)")
	flag.Var(&envs, "env", "K=V environment variable (repeatable)")
	flag.Var(&files, "file", "SRC:DST[:MODE] extra file (repeatable; MODE octal, default 0644)")
	flag.Parse()
	if *out == "" || len(tags) == 0 || (*binary == "" && len(files) == 0) {
		flag.Usage()
		os.Exit(2)
	}

	entries := map[string]entry{}
	if *binary != "" {
		p := *binPath
		if p == "" {
			p = "/" + filepath.Base(*binary)
		}
		if err := addFile(entries, *binary, p, 0o755); err != nil {
			log.Fatal(err)
		}
		if *entrypoint == "" {
			*entrypoint = p
		}
	}
	if *caBundle != "" {
		if err := addFile(entries, *caBundle, "/etc/ssl/certs/ca-certificates.crt", 0o644); err != nil {
			log.Fatal(err)
		}
	}
	for _, f := range files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			log.Fatalf("mkimage: -file %q: want SRC:DST[:MODE]", f)
		}
		mode := int64(0o644)
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 32)
			if err != nil {
				log.Fatalf("mkimage: -file %q: bad mode: %v", f, err)
			}
			mode = m
		}
		if err := addFile(entries, parts[0], parts[1], mode); err != nil {
			log.Fatal(err)
		}
	}
	entries["/etc/passwd"] = entry{data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), mode: 0o644}
	entries["/etc/group"] = entry{data: []byte("root:x:0:\nnonroot:x:65532:\n"), mode: 0o644}

	layerTar, err := buildTar(entries)
	if err != nil {
		log.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		log.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", *arch
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.User = *user
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, envs...)
	cfg.Config.Entrypoint = split(*entrypoint)
	cfg.Config.Cmd = split(*cmd)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		log.Fatal(err)
	}

	refs := map[name.Reference]v1.Image{}
	for _, t := range tags {
		ref, err := name.NewTag(t)
		if err != nil {
			log.Fatalf("mkimage: -tag %q: %v", t, err)
		}
		refs[ref] = img
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		log.Fatal(err)
	}
	if err := tarball.MultiRefWrite(refs, f); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		log.Fatal(err)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s %s\n", *out, d, tags.String())
}

type entry struct {
	data []byte
	mode int64
}

func addFile(m map[string]entry, src, dst string, mode int64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("mkimage: %w", err)
	}
	if !path.IsAbs(dst) {
		return fmt.Errorf("mkimage: %s: destination must be absolute", dst)
	}
	m[path.Clean(dst)] = entry{data: b, mode: mode}
	return nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// buildTar writes the files, every parent directory (0755) and /tmp (1777), sorted, owned by root.
func buildTar(entries map[string]entry) ([]byte, error) {
	dirs := map[string]int64{"/tmp": 0o1777}
	for p := range entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		rel := strings.TrimPrefix(n, "/")
		if mode, ok := dirs[n]; ok {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			continue
		}
		e := entries[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
