// Command pause is the pod sandbox program of the local test cluster (containerd's sandbox_image):
// it sleeps, reaps any child that is re-parented to it (it is PID 1 of the pod), and exits 0 on
// SIGTERM or SIGINT. It is static, so the image holds nothing but this binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		switch s {
		case syscall.SIGCHLD:
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		default:
			os.Exit(0)
		}
	}
}
