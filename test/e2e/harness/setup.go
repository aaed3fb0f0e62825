package harness

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Subject is a ServiceAccount given a federated credential in the emulator.
type Subject struct{ Namespace, ServiceAccount string }

// MirrorCredentialSecret is the Key Vault secret holding the mirror
// registry's credential, a dockerconfigjson, as in the reference setup.
const MirrorCredentialSecret = "mirror-registry-cred"

// MirrorCredential is the mirror registry's dockerconfigjson, and its
// password (which no log may hold).
func (c *Cluster) MirrorCredential() (dockerconfigjson, password string, err error) {
	b, err := os.ReadFile(c.RegistryAuthFile)
	if err != nil {
		return "", "", fmt.Errorf("the mirror registry's credential: %w", err)
	}
	userPass := strings.TrimSpace(string(b))
	_, password, _ = strings.Cut(userPass, ":")
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{c.Registry: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(userPass))}}})
	return string(cfg), password, err
}

// EmulatorConfig is the emulator's world: the reference setup's tenant,
// identity and vault (its DB secret and the mirror registry's credential),
// with a federated credential for each subject on the cluster's issuer, and
// the issuer's CA.
func (c *Cluster) EmulatorConfig(subjects []Subject) ([]byte, error) {
	mirrorCred, _, err := c.MirrorCredential()
	if err != nil {
		return nil, err
	}
	type fedCred struct {
		Name      string   `json:"name"`
		Issuer    string   `json:"issuer"`
		Subject   string   `json:"subject"`
		Audiences []string `json:"audiences"`
	}
	creds := make([]fedCred, 0, len(subjects))
	for _, s := range subjects {
		creds = append(creds, fedCred{
			Name:      "kvinject-" + s.Namespace + "-" + s.ServiceAccount,
			Issuer:    c.IssuerURL,
			Subject:   "system:serviceaccount:" + s.Namespace + ":" + s.ServiceAccount,
			Audiences: []string{"api://AzureADTokenExchange"},
		})
	}
	cfg := map[string]any{
		"tenants": []any{map[string]any{"id": TenantID, "displayName": "homelab"}},
		"identities": []any{map[string]any{
			"clientID": ClientID, "tenant": TenantID, "displayName": "kvinject-apps",
			"federatedCredentials": creds,
		}},
		"vaults": []any{map[string]any{
			"name": Vault, "tenant": TenantID, "cloud": "AzurePublicCloud",
			"roleAssignments": []any{map[string]any{"clientID": ClientID, "role": "Key Vault Secrets User"}},
			"secrets": []any{map[string]any{
				"name": DBSecret,
				"versions": []any{map[string]any{
					"value":       fmt.Sprintf(`{"username":%q,"password":%q}`, DBUsername, DBPassword),
					"contentType": "application/json",
				}},
			}, map[string]any{
				"name":     MirrorCredentialSecret,
				"versions": []any{map[string]any{"value": mirrorCred}},
			}},
		}},
	}
	return yaml.Marshal(cfg)
}

// BuildImages builds the kvinject and demo app binaries and their images
// and imports them into the cluster's containerd.
func (c *Cluster) BuildImages(ctx context.Context, tag string, log *os.File) (kvinject, app string, err error) {
	bin := filepath.Join(c.Root, "bin")
	kvinject, app = ImageRepo+":"+tag, AppImageRepo+":"+tag
	steps := [][]string{
		{"go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=" + tag, "-o", bin + "/", "./cmd/kvinject", "./cmd/kvinject-webhook", "./cmd/kvinject-cache", "./cmd/kvinject-agent", "./cmd/kvinject-exec"},
		{filepath.Join(bin, "cluster-tools/mkimage"), "-o", filepath.Join(bin, "kvinject-image.tar"), "-binary", filepath.Join(bin, "kvinject"),
			"-file", filepath.Join(bin, "kvinject-webhook") + ":/kvinject-webhook:0755", "-file", filepath.Join(bin, "kvinject-cache") + ":/kvinject-cache:0755",
			"-file", filepath.Join(bin, "kvinject-agent") + ":/kvinject-agent:0755", "-file", filepath.Join(bin, "kvinject-exec") + ":/kvinject-exec:0755", "-ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "-tag", kvinject},
		{"test/cluster/load-image.sh", filepath.Join(bin, "kvinject-image.tar")},
	}
	if err := c.run(ctx, log, steps); err != nil {
		return "", "", err
	}
	if _, err := c.BuildImage(ctx, "./test/e2e/dbreader", app, log); err != nil {
		return "", "", err
	}
	return kvinject, app, nil
}

// BuildImage builds a command of this repository (pkg, e.g.
// ./test/e2e/tlsserver) into an image of that one static binary, user
// 65532, tagged ref, and imports it into the cluster's containerd.
func (c *Cluster) BuildImage(ctx context.Context, pkg, ref string, log *os.File) (string, error) {
	bin := filepath.Join(c.Root, "bin")
	name := filepath.Base(pkg)
	return ref, c.run(ctx, log, [][]string{
		{"go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(bin, name), pkg},
		{filepath.Join(bin, "cluster-tools/mkimage"), "-o", filepath.Join(bin, name+"-image.tar"), "-binary", filepath.Join(bin, name), "-tag", ref},
		{"test/cluster/load-image.sh", filepath.Join(bin, name+"-image.tar")},
	})
}

// run runs build steps from the repository root, static and against the
// cluster's state.
func (c *Cluster) run(ctx context.Context, log *os.File, steps [][]string) error {
	for _, s := range steps {
		if err := runEnv(ctx, c.Root, log, []string{"CGO_ENABLED=0", "STATE_DIR=" + c.StateDir}, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// SelfSignedInstall is the suite's installation of kvinject: the webhook's
// own certificates, with the cluster cache.
const SelfSignedInstall = "manifests/with-cache/self-signed"

// Deploy installs kvinject from SelfSignedInstall with a local overlay: the
// images built here, the reference tenant, and egress through the emulator
// with its CA, the way a cluster behind a proxy is set up.
func (c *Cluster) Deploy(ctx context.Context, image string, emu *Emulator) error {
	return c.DeployFrom(ctx, SelfSignedInstall, image, emu)
}

// OverlayDir is the local overlay DeployFrom writes for install (a
// kustomize directory of the repository, with the cache): what `kubectl
// delete -k` takes to remove that installation.
func (c *Cluster) OverlayDir(install string) string {
	if install == SelfSignedInstall {
		return filepath.Join(c.StateDir, "kvinject-overlay")
	}
	return filepath.Join(c.StateDir, "kvinject-overlay-"+filepath.Base(install))
}

// DeployFrom is Deploy from another kustomize directory with the cache
// (e.g. manifests/with-cache/cert-manager).
func (c *Cluster) DeployFrom(ctx context.Context, install, image string, emu *Emulator) error {
	dir := c.OverlayDir(install)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, filepath.Join(c.Root, install))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(emu.CAFile)
	if err != nil {
		return err
	}
	// The cache reaches the emulator as the agents do: HTTPS_PROXY, and its
	// CA as SSL_CERT_FILE, from a ConfigMap beside it.
	caConfigMap, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": EgressCAConfig, "namespace": KvinjectNS},
		"data":     map[string]string{EgressCAKey: string(ca)},
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "egress-ca.yaml"), caConfigMap, 0o644); err != nil {
		return err
	}
	repo, tag, _ := strings.Cut(image, ":")
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
  - egress-ca.yaml
images:
  - name: kvinject
    newName: %s
    newTag: %s
patches:
  - target:
      kind: Deployment
      name: %s
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --tenant-id=%s
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --agent-https-proxy=%s
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --agent-ca-bundle=%s/%s
  - target:
      kind: Deployment
      name: %s
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --ttl=%s
  # images: above renames the webhook's image only; the agent's follows here.
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: %s
        namespace: %s
      spec:
        template:
          spec:
            containers:
              - name: webhook
                env:
                  - name: KVINJECT_AGENT_IMAGE
                    value: %s
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: %s
        namespace: %s
      spec:
        template:
          spec:
            containers:
              - name: cache
                env:
                  - name: HTTPS_PROXY
                    value: %s
                  - name: SSL_CERT_FILE
                    value: /etc/kvinject/egress-ca/%s
                volumeMounts:
                  - name: egress-ca
                    mountPath: /etc/kvinject/egress-ca
                    readOnly: true
            volumes:
              - name: egress-ca
                configMap:
                  name: %s
`, rel, repo, tag, WebhookDeploy, TenantID, emu.ProxyURL, EgressCAConfig, EgressCAKey,
		CacheDeploy, CacheTTL, WebhookDeploy, KvinjectNS, image,
		CacheDeploy, KvinjectNS, emu.ProxyURL, EgressCAKey, EgressCAConfig)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		return err
	}
	if _, err := c.KubectlOut(ctx, nil, "apply", "--server-side", "--force-conflicts", "-k", dir); err != nil {
		return err
	}
	for _, d := range []string{WebhookDeploy, CacheDeploy} {
		if _, err := c.KubectlOut(ctx, nil, "-n", KvinjectNS, "rollout", "restart", "deployment/"+d); err != nil {
			return err
		}
	}
	for _, d := range []string{WebhookDeploy, CacheDeploy} {
		if _, err := c.KubectlOut(ctx, nil, "-n", KvinjectNS, "rollout", "status", "deployment/"+d, "--timeout=180s"); err != nil {
			return err
		}
	}
	return nil
}

// AppNamespace creates a namespace for apps, with the emulator's CA in the
// ConfigMap the agents mount, and the given labels.
func (c *Cluster) AppNamespace(ctx context.Context, name string, labels map[string]string, emu *Emulator) error {
	ca, err := os.ReadFile(emu.CAFile)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: EgressCAConfig, Namespace: name}, Data: map[string]string{EgressCAKey: string(ca)}}
	if _, err := c.Client.CoreV1().ConfigMaps(name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create ConfigMap %s/%s: %w", name, EgressCAConfig, err)
		}
		if _, err := c.Client.CoreV1().ConfigMaps(name).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	// The controller-manager makes the default ServiceAccount; pods wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s has no default ServiceAccount after 30s", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// PushToMirror pushes an image tarball (from mkimage) to the mirror
// registry as repo:tag and returns its reference there.
func (c *Cluster) PushToMirror(ctx context.Context, tarball, repoTag string, log *os.File) (string, error) {
	ref := c.Registry + "/" + repoTag
	return ref, c.run(ctx, log, [][]string{{filepath.Join(c.Root, "bin/cluster-tools/registry"), "push", "-tarball", tarball, "-ref", ref,
		"-auth-file", c.RegistryAuthFile, "-ca", c.RegistryCAFile}})
}

// MirrorDBReader pushes the app image BuildImages made to the mirror
// registry, at the reference setup's path: pods pull it from there with
// the credential provider.
func (c *Cluster) MirrorDBReader(ctx context.Context, tag string, log *os.File) (string, error) {
	return c.PushToMirror(ctx, filepath.Join(c.Root, "bin", "dbreader-image.tar"), "docker/dbreader:"+tag, log)
}

// ApplyDBReader applies manifests/examples/dbreaderapp (dbreaderapp reading
// env variables, dbreaderapp-files reading files) with the app image in the
// local mirror registry (mirrorImage, from MirrorDBReader) in place of the
// reference one: the kubelet pulls it with the credential provider.
func (c *Cluster) ApplyDBReader(ctx context.Context, mirrorImage string) error {
	dir := filepath.Join(c.StateDir, "dbreader-overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, filepath.Join(c.Root, "manifests/examples/dbreaderapp"))
	if err != nil {
		return err
	}
	repo, tag, _ := strings.Cut(strings.TrimPrefix(mirrorImage, c.Registry+"/"), ":")
	repo = c.Registry + "/" + repo
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: mirror-registry.alishomelab.local:8443/docker/dbreader
    newName: %s
    newTag: %s
`, rel, repo, tag)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return err
	}
	_, err = c.KubectlOut(ctx, nil, "apply", "-k", dir)
	return err
}

// RunLogged runs a command from the repository root with its output in log.
func RunLogged(ctx context.Context, root string, log *os.File, name string, args ...string) error {
	return runEnv(ctx, root, log, nil, name, args...)
}

// Env is kvinject running on the local cluster, ready for workloads.
type Env struct {
	Cluster         *Cluster
	Emulator        *Emulator
	Image, AppImage string
	// MirrorImage is the app image in the mirror registry.
	MirrorImage string
}

// Up builds the images, starts the emulator with federated credentials for
// subjects and deploys kvinject on the running cluster, reporting each
// step's duration to step.
func Up(ctx context.Context, root, tag string, subjects []Subject, log *os.File, step func(name string, d time.Duration)) (*Env, error) {
	c, err := Open(root)
	if err != nil {
		return nil, err
	}
	env := &Env{Cluster: c}
	steps := []struct {
		name string
		f    func() error
	}{
		{"images", func() (err error) {
			if env.Image, env.AppImage, err = c.BuildImages(ctx, tag, log); err != nil {
				return err
			}
			env.MirrorImage, err = c.MirrorDBReader(ctx, tag, log)
			return err
		}},
		{"emulator", func() error {
			cfg, err := c.EmulatorConfig(subjects)
			if err != nil {
				return err
			}
			env.Emulator, err = c.StartEmulator(ctx, filepath.Join(root, "bin/kvinject"), cfg)
			return err
		}},
		{"deploy kvinject", func() error { return c.Deploy(ctx, env.Image, env.Emulator) }},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.f(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if step != nil {
			step(s.name, time.Since(start))
		}
	}
	return env, nil
}
