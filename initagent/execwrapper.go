package initagent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// installWrapper copies the exec wrapper src into dir as
// filepath.Base(spec.ExecCommand), mode 0555, through a temporary file and
// a rename: a container never sees a partial binary.
func installWrapper(src, dir string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".kvinject-exec-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	// The wrapper is small; a bound keeps a wrong source from filling the
	// pod's memory.
	const maxWrapperBytes = 16 << 20
	n, err := io.Copy(tmp, io.LimitReader(in, maxWrapperBytes+1))
	if err == nil && n > maxWrapperBytes {
		err = fmt.Errorf("%s is larger than %d bytes", src, maxWrapperBytes)
	}
	if err == nil {
		err = tmp.Chmod(0o555)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, filepath.Base(spec.ExecCommand)))
}

func wrapperProblem(src, dir string, err error) keyvault.Problem {
	p := keyvault.Problem{Cause: "cannot copy the exec wrapper " + src + " into " + dir + ": " + firstLine(err.Error())}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.Fix = fmt.Sprintf("run the agent from the kvinject image, which has %s, with the %s emptyDir mounted at %s", spec.ExecSource, spec.BinVolumeName, dir)
	default:
		p.Fix = fmt.Sprintf("the agent needs write access to the %s emptyDir mounted at %s", spec.BinVolumeName, dir)
	}
	return p
}
