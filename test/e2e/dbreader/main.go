// Command dbreader is the demo's app: the reference setup's DB credential
// reader, moved to injection. It reads the username and password files
// kvinject wrote, proves it has them without printing them (masked, with a
// fingerprint to compare), and stays up like a real app.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", "/var/run/secrets/kvinject", "directory of the files")
	files := flag.String("files", "username,password", "comma-separated files to read")
	once := flag.Bool("once", false, "exit after reading")
	flag.Parse()

	code := 0
	for _, name := range strings.Split(*files, ",") {
		path := filepath.Join(*dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("dbreader: cannot read %s: %v\n", path, err)
			code = 1
			continue
		}
		info, err := os.Stat(path)
		if err != nil {
			fmt.Printf("dbreader: cannot stat %s: %v\n", path, err)
			code = 1
			continue
		}
		sum := sha256.Sum256(b)
		fmt.Printf("dbreader: %s = %s (%d bytes, mode %04o, sha256 %s...)\n",
			name, mask(string(b)), len(b), info.Mode().Perm(), hex.EncodeToString(sum[:])[:12])
	}
	if *once || code != 0 {
		os.Exit(code)
	}
	fmt.Println("dbreader: connected to the database with these credentials (demo); running")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	select {
	case <-stop:
	case <-time.After(24 * time.Hour):
	}
}

// mask shows the first character and the length, never the value.
func mask(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s[:1] + strings.Repeat("*", len(s)-1)
}
