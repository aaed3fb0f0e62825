package main

import "syscall"

// dieWithParent makes a child process get SIGKILL when the benchmark dies.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// mountTmpfs mounts a small tmpfs on dir; the caller has checked it runs in
// a private mount namespace.
func mountTmpfs(dir string) error {
	return syscall.Mount("kvinject-bench", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755,size=4m")
}
