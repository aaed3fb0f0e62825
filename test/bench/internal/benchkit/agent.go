package benchkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/spec"
)

// BuildBinaries builds, into dir, the agent (unless prebuiltAgent names a
// binary to measure as it is) and the benchmark's other program (package
// pkg, as the binary name); it returns their paths. Both are built as the
// Dockerfile builds the images' binaries (static, no paths, no symbols),
// so that sizes and memory are those of what ships. It runs from the
// module root.
func BuildBinaries(dir, prebuiltAgent, name, pkg string) (agent, program string, err error) {
	agent = prebuiltAgent
	if agent == "" {
		agent = filepath.Join(dir, "kvinject-agent")
		if err := goBuild(agent, "./cmd/kvinject-agent"); err != nil {
			return "", "", err
		}
	}
	program = filepath.Join(dir, name)
	return agent, program, goBuild(program, pkg)
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (run from the module root): %w", pkg, err)
	}
	return nil
}

// FileSize is the size of the file at path, 0 when it cannot be read.
func FileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// AgentEnv is the init container's wiring as the webhook injects it, less
// the spec (KVINJECT_SPEC, which differs per pod): egress through the
// emulator's proxy, trusting its CA, and workload identity's variables with
// tokenFile as the projected ServiceAccount token.
func AgentEnv(emu *azemu.Emulator, tokenFile string) []string {
	return []string{
		"HTTPS_PROXY=" + emu.ProxyURL(),
		"SSL_CERT_FILE=" + emu.CAFile(),
		spec.EnvClientID + "=" + ClientID,
		spec.EnvTenantID + "=" + TenantID,
		spec.EnvFederatedTokenFile + "=" + tokenFile,
		spec.EnvAuthorityHost + "=" + Authority,
	}
}

// TmpfsDir is where an agent's output directory goes: /dev/shm when the
// machine has it, as the pod's secrets volume is a memory-backed emptyDir;
// otherwise "", the default temporary directory.
func TmpfsDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// WrittenFiles counts the secret files in dir, leaving out the agent's own
// entries (..data, ..kvinject_*), which it keeps as the kubelet's
// AtomicWriter does.
func WrittenFiles(dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") {
			n++
		}
	}
	return n
}

// LastLines is the last n lines of s: the end of a failed process's log,
// where its error is.
func LastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
