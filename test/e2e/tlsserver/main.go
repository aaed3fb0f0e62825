// Command tlsserver is the end-to-end suite's HTTPS app: it serves the key
// pair kvinject wrote from a Key Vault certificate, as a web server with
// ssl_certificate and ssl_certificate_key does, and answers every request
// with the serial number of the certificate it serves.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", ":8443", "address to serve HTTPS on")
	certFile := flag.String("cert", "/var/run/secrets/kvinject/tls.crt", "PEM certificate chain, the leaf first")
	keyFile := flag.String("key", "/var/run/secrets/kvinject/tls.key", "PEM private key")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlsserver: %v\n", err)
		os.Exit(1)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlsserver: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("tlsserver: serving %s (serial %s, %d certificates in the chain) on %s\n", leaf.Subject.CommonName, leaf.SerialNumber, len(pair.Certificate), *addr)
	srv := &http.Server{
		Addr:              *addr,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "serial %s\n", leaf.SerialNumber)
		}),
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		_ = srv.Close()
	}()
	if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "tlsserver: %v\n", err)
		os.Exit(1)
	}
}
