package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/internal/testkit/syncbuf"
	"github.com/kvinject/kvinject/test/bench/internal/benchkit"
)

// child is one replica of the cache: ./child, a process of its own, so
// that its memory and CPU are its own.
type child struct {
	cmd    *exec.Cmd
	url    string // https://127.0.0.1:PORT
	logs   *syncbuf.Buffer
	done   chan struct{}
	exited error
}

// startChild starts a cache replica with kvinject cache's defaults (extra
// flags aside), egress through the emulator's proxy as HTTPS_PROXY, and
// waits until it is ready.
func (b *bench) startChild(extra ...string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	probe, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"-port", strconv.Itoa(port), "-cert-dir", b.certDir,
		"-health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(probe), "-kubeconfig", b.api.kubeconfig}, extra...)
	c := &child{url: "https://127.0.0.1:" + strconv.Itoa(port), logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(b.childBin, args...)
	c.cmd.Env = []string{"HTTPS_PROXY=" + b.Emulator.ProxyURL(), "SSL_CERT_FILE=" + b.Emulator.CAFile(), "HOME=" + b.tmp}
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		c.exited = c.cmd.Wait()
		close(c.done)
	}()
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", probe)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(readyz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("the cache exited (%v):\n%s", c.exited, benchkit.LastLines(c.logs.String(), 10))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = c.stop()
			return nil, fmt.Errorf("the cache was not ready within 30s:\n%s", benchkit.LastLines(c.logs.String(), 10))
		}
	}
}

// stop ends the replica as the kubelet does: SIGTERM, then SIGKILL.
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("the cache did not stop within 30s of SIGTERM")
	}
	var ee *exec.ExitError
	if c.exited != nil && !errors.As(c.exited, &ee) {
		return c.exited
	}
	if c.exited != nil {
		return fmt.Errorf("the cache exited with %v:\n%s", c.exited, benchkit.LastLines(c.logs.String(), 10))
	}
	return nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100

// cpu is the process's user and system CPU time so far (/proc/PID/stat,
// in clock ticks of 10 ms).
func (c *child) cpu() (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", c.pid())
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", c.pid(), len(f))
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procMem is a process's resident set now (VmRSS, split into RssAnon and
// RssFile) and at its highest (VmHWM), in KiB.
type procMem = benchkit.ProcMem

func (c *child) mem() (procMem, error) { return benchkit.ReadProcStatus(c.pid()) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
