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
	envNames := flag.String("env", os.Getenv("DBREADER_ENV"), "comma-separated environment variables to read, as an app configured by env does (default $DBREADER_ENV)")
	watch := flag.Duration("watch", 0, "read the files again this often and print each one that changed, as an app that follows rotation does")
	onHUP := flag.Bool("reload-on-sighup", false, "on SIGHUP, say so (counted) and read the files again, as an app that reloads on a signal does")
	flag.Parse()
	// As the reference setup's app: with USERNAME and PASSWORD in its
	// environment (from ESO's Secret, or from kvinject.io/env- annotations)
	// it reads them and no files.
	if *envNames == "" && !isFlagSet("files") && os.Getenv("USERNAME") != "" && os.Getenv("PASSWORD") != "" {
		*envNames, *files = "USERNAME,PASSWORD", ""
	}
	// Variables named in DBREADER_ENV, as an app configured by env alone.
	if *envNames != "" && !isFlagSet("files") && !isFlagSet("env") {
		*files = ""
	}
	fmt.Printf("dbreader: pid %d\n", os.Getpid())

	code := 0
	for _, name := range strings.Split(*envNames, ",") {
		if name == "" {
			continue
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			fmt.Printf("dbreader: env %s is not set\n", name)
			code = 1
			continue
		}
		sum := sha256.Sum256([]byte(v))
		fmt.Printf("dbreader: env %s: %d bytes, sha256 %s...\n", name, len(v), hex.EncodeToString(sum[:])[:12])
	}
	seen := map[string]string{}
	for _, name := range strings.Split(*files, ",") {
		if name == "" {
			continue
		}
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
		seen[name] = string(b)
		fmt.Printf("dbreader: %s = %s (%d bytes, mode %04o, sha256 %s...)\n",
			name, mask(string(b)), len(b), info.Mode().Perm(), hex.EncodeToString(sum[:])[:12])
	}
	if *once || code != 0 {
		os.Exit(code)
	}
	fmt.Println("dbreader: connected to the database with these credentials (demo); running")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	hup := make(chan os.Signal, 1)
	if *onHUP {
		signal.Notify(hup, syscall.SIGHUP)
	}
	hups := 0
	var tick <-chan time.Time
	if *watch > 0 {
		t := time.NewTicker(*watch)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case sig := <-stop:
			fmt.Printf("dbreader: got %v, shutting down\n", sig)
			return
		case <-time.After(24 * time.Hour):
			return
		case <-hup:
			hups++
			fmt.Printf("dbreader: SIGHUP %d: reading the files again\n", hups)
			for name := range seen {
				b, err := os.ReadFile(filepath.Join(*dir, name))
				if err != nil {
					fmt.Printf("dbreader: cannot read %s: %v\n", name, err)
					continue
				}
				seen[name] = string(b)
				sum := sha256.Sum256(b)
				fmt.Printf("dbreader: %s = %s (%d bytes, sha256 %s...)\n", name, mask(string(b)), len(b), hex.EncodeToString(sum[:])[:12])
			}
		case <-tick:
			for name, old := range seen {
				b, err := os.ReadFile(filepath.Join(*dir, name))
				if err != nil || string(b) == old {
					continue
				}
				seen[name] = string(b)
				sum := sha256.Sum256(b)
				fmt.Printf("dbreader: %s changed: %s (%d bytes, sha256 %s...)\n", name, mask(string(b)), len(b), hex.EncodeToString(sum[:])[:12])
			}
		}
	}
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// mask shows the first character and the length, never the value.
func mask(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s[:1] + strings.Repeat("*", len(s)-1)
}
