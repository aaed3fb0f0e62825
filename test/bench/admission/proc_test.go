package main

import (
	"os"
	"runtime"
	"testing"
)

// procMem and procRSS read this process's own /proc/<pid>/status: a total, and
// anonymous and file-backed parts that fit in it.
func TestProcStatus(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/<pid>/status is Linux's")
	}
	for name, read := range map[string]func(int) (int64, int64, int64, error){"procMem": procMem, "procRSS": procRSS} {
		total, anon, file, err := read(os.Getpid())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if total <= 0 || anon <= 0 || file <= 0 || anon+file > total+total/10 {
			t.Errorf("%s: total %d KiB, anon %d KiB, file %d KiB", name, total, anon, file)
		}
	}
	if _, err := procStatus(1 << 30); err == nil {
		t.Error("the status of no process is not an error")
	}
}
