package initagent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Names the writer reserves in the output directory, as the kubelet's
// AtomicWriter does for configMap and secret volumes: the files live in a
// fresh ..kvinject_<timestamp>_<random> directory, ..data is a symlink to
// it, and each file name is a symlink to ..data/<name>. Replacing ..data with
// one rename makes a whole new set visible at once.
const (
	dataDirLink    = "..data"
	newDataDirLink = "..data_tmp"
	dataDirPrefix  = "..kvinject_"
)

// dirMode lets the app read the files whatever its user: the agent runs as
// the app's user when known (files 0400), else as 65532 (files 0444, or 0440
// when it shares the app's group or the pod has an fsGroup).
const dirMode fs.FileMode = 0o755

// FileData is one file to write.
type FileData struct {
	Name string
	Mode fs.FileMode
	Data []byte
}

// WriteError says which step of the atomic write failed. Its text names
// paths and system errors only.
type WriteError struct {
	Op, Path string
	Err      error
}

func (e *WriteError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err) }
func (e *WriteError) Unwrap() error { return e.Err }

// WriteResult reports a successful write.
type WriteResult struct {
	DataDir string // the new ..kvinject_* directory
	// Warnings are cleanup problems after the switch, which do not undo it.
	Warnings []string
}

// WriteFiles writes files into dir so that a reader sees either the previous
// set or the complete new one, never a mix and never a partial file: each
// file is written and fsynced in a fresh directory, the directory is fsynced,
// per-file symlinks are created (dangling until the switch on a first run),
// and ..data is switched to the new directory with an atomic rename. On any
// failure before the switch everything created is removed again.
func WriteFiles(dir string, files []FileData, now time.Time) (res WriteResult, err error) {
	return writeSet(dir, files, nil, now)
}

// writeSet is WriteFiles that also writes versions, when not nil, as
// versionsFile in the new data directory: it switches with the files.
func writeSet(dir string, files []FileData, versions []byte, now time.Time) (res WriteResult, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return res, &WriteError{"use output directory", dir, err}
	}
	if !st.IsDir() {
		return res, &WriteError{"use output directory", dir, errors.New("not a directory")}
	}
	seen, err := fileNames(files)
	if err != nil {
		return res, err
	}

	dataDir, err := os.MkdirTemp(dir, dataDirPrefix+now.UTC().Format("2006_01_02_15_04_05.000000000")+"_")
	if err != nil {
		return res, &WriteError{"create directory in", dir, err}
	}
	var created []string // per-file symlinks this run created
	committed := false
	defer func() {
		if committed {
			return
		}
		for _, p := range created {
			_ = os.Remove(p)
		}
		_ = os.Remove(filepath.Join(dir, newDataDirLink))
		_ = os.RemoveAll(dataDir)
	}()

	if err := writeDataDir(dataDir, files, versions); err != nil {
		return res, err
	}
	if err := linkFiles(dir, files, &created); err != nil {
		return res, err
	}

	tmpLink := filepath.Join(dir, newDataDirLink)
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(dataDir), tmpLink); err != nil {
		return res, &WriteError{"create symlink", tmpLink, err}
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirLink)); err != nil {
		return res, &WriteError{"switch", filepath.Join(dir, dataDirLink), err}
	}
	committed = true
	res.DataDir = dataDir
	warn := func(err error) {
		if err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}
	warn(syncDir(dir))
	cleanUp(dir, dataDir, seen, warn)
	return res, nil
}

// fileNames checks that the names are plain and distinct, and returns them.
func fileNames(files []FileData) (map[string]bool, error) {
	seen := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || strings.ContainsRune(f.Name, '/') || strings.HasPrefix(f.Name, "..") || f.Name == "." || seen[f.Name] {
			return nil, &WriteError{"write file", f.Name, errors.New("invalid or duplicate file name")}
		}
		seen[f.Name] = true
	}
	return seen, nil
}

// writeDataDir writes the files, and versions when not nil, into the new
// data directory, and makes them durable.
func writeDataDir(dataDir string, files []FileData, versions []byte) error {
	for _, f := range files {
		if err := writeFile(filepath.Join(dataDir, f.Name), f.Data, f.Mode); err != nil {
			return err
		}
	}
	if versions != nil {
		if err := writeFile(filepath.Join(dataDir, versionsFile), versions, 0o444); err != nil {
			return err
		}
	}
	if err := os.Chmod(dataDir, dirMode); err != nil {
		return &WriteError{"chmod", dataDir, err}
	}
	return syncDir(dataDir)
}

// linkFiles makes each file's symlink through ..data in dir, in name
// order, adding those it created to created; one from an earlier run is
// kept, anything else in the way is an error.
func linkFiles(dir string, files []FileData, created *[]string) error {
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		target := filepath.Join(dataDirLink, n)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Symlink(target, p); err != nil {
				return &WriteError{"create symlink", p, err}
			}
			*created = append(*created, p)
		case err != nil:
			return &WriteError{"inspect", p, err}
		case fi.Mode()&fs.ModeSymlink != 0 && readlink(p) == target:
			// From an earlier run; it follows ..data.
		default:
			return &WriteError{"create symlink", p, errors.New("a file the agent did not write is in the way")}
		}
	}
	return nil
}

// cleanUp removes what the previous set left in dir: symlinks of files no
// longer written (not in names), the old data directory and leftovers of
// interrupted runs. Failures are warnings: the new set is in place.
func cleanUp(dir, dataDir string, names map[string]bool, warn func(error)) {
	entries, err := os.ReadDir(dir)
	warn(err)
	for _, e := range entries {
		n := e.Name()
		p := filepath.Join(dir, n)
		switch {
		case strings.HasPrefix(n, dataDirPrefix) && n != filepath.Base(dataDir) && e.IsDir():
			warn(os.RemoveAll(p))
		case e.Type()&fs.ModeSymlink != 0 && !names[n] && strings.HasPrefix(readlink(p), dataDirLink+"/"):
			warn(os.Remove(p))
		}
	}
}

// writeFile creates path exclusively with mode (not subject to the umask),
// writes data and fsyncs it. The mode may deny the owner write access: the
// open descriptor stays writable.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode.Perm())
	if err != nil {
		return &WriteError{"create", path, err}
	}
	err = f.Chmod(mode.Perm())
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &WriteError{"write", path, err}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return &WriteError{"open", dir, err}
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &WriteError{"fsync", dir, err}
	}
	return nil
}

func readlink(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return t
}
