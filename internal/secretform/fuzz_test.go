package secretform

import (
	"context"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/txtar"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/internal/spec"
)

// FuzzExtract: any value from the vault and any path the webhook admits.
// Extract never panics; a problem never quotes the value; a string leaf
// comes back raw.
func FuzzExtract(f *testing.F) {
	f.Add(`{"username":"superman","password":"louiselane"}`, "password")
	f.Add(`{"db":{"hosts":["a","b"],"port":5432}}`, "db.hosts.1")
	f.Add(`["x"]`, "0")
	f.Add(`"just a string"`, "a")
	f.Add(`{"a":1e400}`, "a")
	f.Fuzz(func(t *testing.T, value, path string) {
		if path != "" {
			if _, err := spec.SplitPath(path); err != nil {
				return // denied at admission
			}
		}
		got, err := Extract(value, path)
		if err == nil {
			if path == "" && string(got) != value {
				t.Fatalf("the whole value changed")
			}
			return
		}
		var pe *PropertyError
		if !errors.As(err, &pe) {
			t.Fatalf("error %T, want *PropertyError", err)
		}
		// Long enough not to be a key or a word of the message by chance.
		if len(value) >= 24 && strings.Contains(pe.Problem+pe.Detail+pe.Fix, value) {
			t.Fatalf("the problem quotes the value")
		}
	})
}

// FuzzRender: any template the webhook admits, with any secret value. It
// ends within a second, within the output limit, and a problem never
// quotes the value.
func FuzzRender(f *testing.F) {
	f.Add(`{{ secret "db#password" }}`, `{"password":"louiselane"}`)
	f.Add(`{{ $x := secret "db" }}{{ $x = printf "%s%s" $x $x }}{{ $x = printf "%s%s" $x $x }}{{ len $x }}`, "0123456789abcdef")
	f.Add(`{{ define "a" }}{{ secret "db" | b64enc }}{{ end }}{{ template "a" }}{{ template "a" }}`, "v")
	f.Add(`{{ printf "%099999s" (secret "db") }}`, "v")
	f.Add(`{{ secret "db" | b64dec | js | html | urlquery | quote }}`, "aGVsbG8=")
	cloud, _ := spec.LookupCloud(spec.DefaultCloud)
	f.Fuzz(func(t *testing.T, text, value string) {
		refs, err := spec.ParseTemplate(text, testVault, cloud)
		if err != nil {
			return // denied at admission
		}
		file := spec.File{Name: "f", Mode: "0400", Template: text, Refs: refs}
		start := time.Now()
		out, err := Render(context.Background(), file, func(r spec.Ref) ([]byte, error) { return Extract(value, r.Path) })
		if took := time.Since(start); took > time.Second {
			t.Fatalf("rendering took %v", took)
		}
		if len(out) > MaxRenderedSize {
			t.Fatalf("%d bytes rendered", len(out))
		}
		var re *RenderError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("error %T, want *RenderError", err)
		}
		if re != nil && len(value) >= 24 && !strings.Contains(text, value) && strings.Contains(re.Error()+re.Detail+re.Fix, value) {
			t.Fatalf("the problem quotes the value")
		}
	})
}

// FuzzCertBundle: any value under a certificate content type, any form.
// Parsing never panics and ends within a second; a problem is a
// *PropertyError that never quotes the value; a form that is given parses.
func FuzzCertBundle(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "certs", "*.txtar"))
	for _, name := range files {
		ar, err := txtar.ParseFile(name)
		if err != nil || len(ar.Files) < 2 {
			f.Fatalf("%s: not a golden bundle", name)
		}
		f.Add(strings.TrimSpace(string(ar.Files[0].Data)) == spec.ContentTypePKCS12, string(ar.Files[1].Data), "fullchain")
	}
	f.Add(false, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cert")
	f.Add(true, "MIIBAAIBAzCB", "key")
	f.Fuzz(func(t *testing.T, pfx bool, value, form string) {
		ct := spec.ContentTypePEM
		if pfx {
			ct = spec.ContentTypePKCS12
		}
		start := time.Now()
		out, err := bundleCache{}.form(spec.SecretID{Name: "c"}, secret{Value: value, ContentType: ct}, form)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("took %v", took)
		}
		if err != nil {
			var pe *PropertyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T, want *PropertyError", err)
			}
			if len(value) >= 24 && strings.Contains(pe.Problem+pe.Detail+pe.Fix, value) {
				t.Fatalf("the problem quotes the value")
			}
			return
		}
		switch form {
		case spec.CertFormPFX:
			if _, _, _, err := pkcs12.DecodeChain(out, ""); err != nil {
				t.Fatalf("#pfx does not decode: %v", err)
			}
		case spec.CertFormKey, spec.CertFormCert, spec.CertFormCA:
			if blk, _ := pem.Decode(out); blk == nil {
				t.Fatalf("#%s is not PEM", form)
			}
		}
	})
}
