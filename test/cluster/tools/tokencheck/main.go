// Command tokencheck is the smoke-test workload of the local cluster (test/cluster/smoke.sh): it reads a
// projected service-account token, prints its iss, sub, aud and exp as one JSON line, GETs each URL in
// CHECK_URLS (comma-separated; trust from SSL_CERT_FILE or /etc/ssl/certs) and prints the status codes,
// then sleeps until SIGTERM. It never prints the token itself.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	file := os.Getenv("TOKEN_FILE")
	if file == "" {
		file = "/var/run/secrets/tokens/token"
	}
	claims, kid, err := readClaims(file)
	if err != nil {
		fmt.Printf(`{"error":%q}`+"\n", err.Error())
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]any{"iss": claims["iss"], "sub": claims["sub"], "aud": claims["aud"], "exp": claims["exp"], "kid": kid})
	fmt.Printf("CLAIMS %s\n", out)

	client := &http.Client{Timeout: 10 * time.Second}
	for _, u := range strings.Split(os.Getenv("CHECK_URLS"), ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		resp, err := client.Get(u)
		if err != nil {
			fmt.Printf("GET %s -> error: %v\n", u, err)
			continue
		}
		resp.Body.Close()
		fmt.Printf("GET %s -> %d\n", u, resp.StatusCode)
	}

	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

// readClaims returns the token's payload claims and the kid of its header.
func readClaims(file string) (map[string]any, string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	parts := strings.Split(strings.TrimSpace(string(b)), ".")
	if len(parts) != 3 {
		return nil, "", fmt.Errorf("%s: not a JWT", file)
	}
	var header struct {
		Kid string `json:"kid"`
	}
	var claims map[string]any
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, "", fmt.Errorf("%s: part %d: %w", file, i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, "", fmt.Errorf("%s: part %d: %w", file, i, err)
		}
	}
	return claims, header.Kid, nil
}
