package manifests

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

//go:embed all:base all:overlays all:default all:examples all:pull-credentials all:node-identity all:components all:with-cache
var files embed.FS

// ImageName is the image name the manifests use for both roles (webhook and agent); the
// kustomization's `images:` entry of that name gives its tag (and registry, with newName).
const ImageName = "kvinject"

// BaseKustomization is the file holding the `images:` entry, relative to this directory.
const BaseKustomization = "base/kustomization.yaml"

// Overlays are the installable kustomizations, one per source of the serving certificate.
var Overlays = []string{"overlays/self-signed", "overlays/cert-manager", "overlays/openshift"}

// WithCache are the installable kustomizations with the cluster cache: each is the overlay of
// the same source, the component CacheComponent, and that source's certificate for the cache.
var WithCache = []string{"with-cache/self-signed", "with-cache/cert-manager", "with-cache/openshift"}

// CacheComponent is the kustomize Component holding the cache's resources and the webhook's
// --cache-url; it is not installable alone.
const CacheComponent = "components/cache"

// PullCredentials is the RBAC that kvinject-credential-provider needs for
// pods that pull without being injected.
const PullCredentials = "pull-credentials"

// NodeIdentity is the DaemonSet and ServiceAccount of the provider's node
// mode; its kustomization names the image like the base's.
const NodeIdentity = "node-identity"

// NodeIdentityKustomization holds the node identity's `images:` entry.
const NodeIdentityKustomization = NodeIdentity + "/kustomization.yaml"

// Examples are the example workloads' kustomizations.
var Examples = []string{"examples/dbreaderapp", "examples/multi-container", "examples/template"}

// Render builds the kustomization in dir (relative to this directory, e.g.
// "overlays/self-signed") and returns the multi-document YAML. A non-empty tag replaces the
// image tag of base/kustomization.yaml for this rendering only.
func Render(dir, tag string) ([]byte, error) {
	mem := filesys.MakeFsInMemory()
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		if tag != "" && (p == BaseKustomization || p == NodeIdentityKustomization) {
			if b, err = SetImageTag(b, tag); err != nil {
				return err
			}
		}
		return mem.WriteFile(path.Join("/", p), b)
	})
	if err != nil {
		return nil, fmt.Errorf("load manifests: %w", err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(mem, path.Join("/", dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return m.AsYaml()
}

// SetImageTag sets newTag of the `images:` entry named ImageName in a kustomization file's
// content, keeping everything else (comments included) as it is: what
// `kustomize edit set image kvinject=kvinject:TAG` does.
func SetImageTag(kustomization []byte, tag string) ([]byte, error) {
	if tag == "" {
		return nil, fmt.Errorf("empty image tag")
	}
	node, err := yaml.Parse(string(kustomization))
	if err != nil {
		return nil, fmt.Errorf("parse kustomization: %w", err)
	}
	images, err := node.Pipe(yaml.LookupCreate(yaml.SequenceNode, "images"))
	if err != nil {
		return nil, err
	}
	entry, err := images.Pipe(yaml.MatchElement("name", ImageName)) // nil if absent
	if err != nil {
		return nil, err
	}
	if entry == nil {
		entry = yaml.NewMapRNode(&map[string]string{"name": ImageName})
		if err := images.PipeE(yaml.Append(entry.YNode())); err != nil {
			return nil, err
		}
	}
	if err := entry.PipeE(yaml.SetField("newTag", yaml.NewStringRNode(tag))); err != nil {
		return nil, err
	}
	s, err := node.String()
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}
