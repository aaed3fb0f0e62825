// Command oidcsite is a static HTTPS file server: the local stand-in for the public static website
// (Azure Storage static website in the reference setup) that serves a cluster's service-account
// issuer discovery document and JWKS. The issuer URL is this site's URL.
//
//	oidcsite -addr 127.0.0.1:8443 -dir DIR -cert tls.crt -key tls.key
//
// It serves DIR's files as they are (re-read on every request, so publishing is just writing files),
// with application/json for files without an extension, logs every request, and lists no directories.
package main

import (
	"flag"
	"log"
	"mime"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	dir := flag.String("dir", ".", "directory to serve")
	cert := flag.String("cert", "", "TLS certificate (PEM, chain)")
	key := flag.String("key", "", "TLS private key (PEM)")
	flag.Parse()
	if *cert == "" || *key == "" {
		log.Fatal("oidcsite: -cert and -key are required")
	}
	root, err := filepath.Abs(*dir)
	if err != nil {
		log.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := serve(w, r, root)
		log.Printf("%s %s %s -> %d", r.RemoteAddr, r.Method, r.URL.Path, status)
	})
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		_ = srv.Close()
	}()
	log.Printf("oidcsite: serving %s on https://%s", root, *addr)
	if err := srv.ListenAndServeTLS(*cert, *key); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func serve(w http.ResponseWriter, r *http.Request, root string) int {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return http.StatusMethodNotAllowed
	}
	p := path.Clean("/" + r.URL.Path)
	f := filepath.Join(root, filepath.FromSlash(p))
	st, err := os.Stat(f)
	if err != nil || st.IsDir() || strings.Contains(p, "/..") {
		http.NotFound(w, r)
		return http.StatusNotFound
	}
	ct := mime.TypeByExtension(path.Ext(p))
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	http.ServeFile(w, r, f)
	return http.StatusOK
}
