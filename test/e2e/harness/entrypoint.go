package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"sigs.k8s.io/yaml"
)

// RunEntrypoint runs `kvinject entrypoint args...` (the binary BuildImages
// built) as a user on this machine would: the registry credentials in the
// docker config of dockerConfigDir (DOCKER_CONFIG; "" for none at all),
// nothing else of the caller's home. It returns the exit code and output.
func (c *Cluster) RunEntrypoint(ctx context.Context, dockerConfigDir string, args ...string) (code int, stdout, stderr string, err error) {
	home, err := os.MkdirTemp("", "kvinject-entrypoint-home-")
	if err != nil {
		return 0, "", "", err
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, filepath.Join(c.Root, "bin", "kvinject"), append([]string{"entrypoint"}, args...)...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	if dockerConfigDir != "" {
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+dockerConfigDir)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String(), errOut.String(), nil
	}
	return 0, out.String(), errOut.String(), err
}

// MirrorDockerConfig writes the mirror registry's credential as a docker
// config.json (what `docker login` leaves) into a new directory under dir.
func (c *Cluster) MirrorDockerConfig(dir string) (string, error) {
	cfg, _, err := c.MirrorCredential()
	if err != nil {
		return "", err
	}
	d, err := os.MkdirTemp(dir, "docker-config-")
	if err != nil {
		return "", err
	}
	return d, os.WriteFile(filepath.Join(d, "config.json"), []byte(cfg), 0o600)
}

// EntrypointAnnotation is the kvinject.io/entrypoint-<container>
// annotation of an image in the mirror registry, from `kvinject entrypoint`
// with the mirror's credential and CA, the way a user makes it; extra args
// go to the command (--entrypoint-only, --platform ...). The platform is
// linux and this machine's architecture unless extra names another.
func (c *Cluster) EntrypointAnnotation(ctx context.Context, container, image string, extra ...string) (key, value string, err error) {
	tmp, err := os.MkdirTemp("", "kvinject-entrypoint-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	dockerConfig, err := c.MirrorDockerConfig(tmp)
	if err != nil {
		return "", "", err
	}
	// The images built here are for this machine's architecture.
	args := append([]string{"--container", container, "--ca-file", c.RegistryCAFile, "--platform", "linux/" + runtime.GOARCH}, extra...)
	code, out, errOut, err := c.RunEntrypoint(ctx, dockerConfig, append(args, image)...)
	if err != nil || code != 0 {
		return "", "", fmt.Errorf("kvinject entrypoint %s: exit %d, %v: %s", image, code, err, errOut)
	}
	var m map[string]string
	if err := yaml.Unmarshal([]byte(out), &m); err != nil || len(m) != 1 {
		return "", "", fmt.Errorf("kvinject entrypoint %s printed %q, not one annotation: %v", image, out, err)
	}
	for k, v := range m {
		key, value = k, v
	}
	return key, value, nil
}
