package spec

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"text/template"

	"github.com/google/go-cmp/cmp"
)

const homelab = "https://homelab-kv.vault.azure.net"

func publicCloud(t testing.TB) Cloud {
	t.Helper()
	c, err := LookupCloud(DefaultCloud)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseRef(t *testing.T) {
	const v = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		in      string
		want    Ref
		wantErr string
	}{
		{in: "app-pgsql", want: Ref{Vault: homelab, Name: "app-pgsql"}},
		{in: "app-pgsql#username", want: Ref{Vault: homelab, Name: "app-pgsql", Path: "username"}},
		{in: "app-pgsql/" + strings.ToUpper(v) + "#db.hosts.0", want: Ref{Vault: homelab, Name: "app-pgsql", Version: v, Path: "db.hosts.0"}},
		{in: "https://Other-KV.vault.azure.net/secrets/db", want: Ref{Vault: "https://other-kv.vault.azure.net", Name: "db"}},
		{in: "https://other-kv.vault.azure.net/secrets/db/" + v + "/", want: Ref{Vault: "https://other-kv.vault.azure.net", Name: "db", Version: v}},
		{in: "https://other-kv.vault.azure.net/secrets/db#password", want: Ref{Vault: "https://other-kv.vault.azure.net", Name: "db", Path: "password"}},
		{in: "", wantErr: `reference "" must be <name>[/<version>][#<path>] or a secret URL, without spaces`},
		{in: " db", wantErr: `reference " db" must be`},
		{in: "db#", wantErr: `property path "" must be 1-256 characters`},
		{in: "db#a..b", wantErr: `property path "a..b" has an empty key`},
		{in: "db/v1", wantErr: `secret version "v1" is not valid: 32 hexadecimal digits`},
		{in: "db/" + v + "/extra", wantErr: `secret version "` + v + `/extra" is not valid`},
		{in: "d_b", wantErr: `secret name "d_b" is not valid`},
		{in: "http://kv1.vault.azure.net/secrets/db", wantErr: `must be an https:// URL or a vault name`},
		{in: "https://kv1.vault.azure.net:8443/secrets/db", wantErr: `must be just https://NAME.vault.azure.net`},
		{in: "https://kv1.example.com/secrets/db", wantErr: `is not a Key Vault host: want https://NAME.vault.azure.net`},
		{in: "https://kv1.vault.azure.net/keys/db", wantErr: `a secret URL is https://<vault-host>/secrets/<name>[/<version>]`},
		{in: "https://kv1.vault.azure.net/secrets/db?x=1", wantErr: `a secret URL is https://<vault-host>/secrets/<name>[/<version>]`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRef(tt.in, homelab, publicCloud(t))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRef(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// The URL form of a ref parses back to the same ref.
			again, err := ParseRef(got.String(), "", publicCloud(t))
			if err != nil || again != got {
				t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
	if _, err := ParseRef("db", "", publicCloud(t)); !errors.Is(err, ErrNoVault) {
		t.Errorf("short ref without a vault: %v, want ErrNoVault", err)
	}
}

func TestParseVault(t *testing.T) {
	china, err := LookupCloud("AzureChinaCloud")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in    string
		cloud Cloud
		want  string
		err   bool
	}{
		{in: "homelab-kv", cloud: publicCloud(t), want: homelab},
		{in: "HomeLab-KV", cloud: publicCloud(t), want: homelab},
		{in: "https://homelab-kv.vault.azure.net/", cloud: publicCloud(t), want: homelab},
		{in: "homelab-kv", cloud: china, want: "https://homelab-kv.vault.azure.cn"},
		{in: "https://homelab-kv.vault.azure.net", cloud: china, err: true},
		{in: "kv", cloud: publicCloud(t), err: true},
		{in: "1kv", cloud: publicCloud(t), err: true},
		{in: "kv--1", cloud: publicCloud(t), err: true},
		{in: "kv-", cloud: publicCloud(t), err: true},
		{in: strings.Repeat("k", 25), cloud: publicCloud(t), err: true},
		{in: "https://user@kv1.vault.azure.net", cloud: publicCloud(t), err: true},
		{in: "https://kv1.vault.azure.net.evil.com", cloud: publicCloud(t), err: true},
	}
	for _, tt := range tests {
		got, err := ParseVault(tt.in, tt.cloud)
		if (err != nil) != tt.err || got != tt.want && !tt.err {
			t.Errorf("ParseVault(%q, %s) = %q, %v; want %q, error %v", tt.in, tt.cloud.Name, got, err, tt.want, tt.err)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]string{"0400": "0400", "0440": "0440", "0444": "0444", "440": "0440"} {
		m, err := ParseMode(in)
		if err != nil || FormatMode(m) != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %s", in, FormatMode(m), err, want)
		}
	}
	for _, in := range []string{"", "0", "44", "04400", "0644", "0600", "0755", "4444", "0448", "rw", "+444", "0x44", "0000", "0040", "0004", "0044"} {
		if _, err := ParseMode(in); err == nil {
			t.Errorf("ParseMode(%q) accepted", in)
		}
	}
}

func TestParseTemplate(t *testing.T) {
	refs, err := ParseTemplate(`{{ secret "db#user" }}:{{ secret "db#password" | b64enc }}
{{- if true }}{{ printf "%s" (secret "https://other-kv.vault.azure.net/secrets/tls") }}{{ end }}`, homelab, publicCloud(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Ref{
		"db#user":     {Vault: homelab, Name: "db", Path: "user"},
		"db#password": {Vault: homelab, Name: "db", Path: "password"},
		"https://other-kv.vault.azure.net/secrets/tls": {Vault: "https://other-kv.vault.azure.net", Name: "tls"},
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("refs (-want +got):\n%s", diff)
	}

	const secretText = "hunter2-literal"
	for _, tt := range []struct{ text, want string }{
		{secretText + "{{", "line 1: does not parse"},
		{"a\n" + secretText + "{{ end }}", "line 2: does not parse"},
		{"{{ secret \"db\" }}\n{{ env \"HOME\" }}", `line 2, column 4: unknown function "env"`},
		{`{{ secret "db" "x" }}`, "line 1, column 4: secret takes one quoted reference"},
		{`{{ call secret "db" }}`, "line 1, column 9: secret must be called directly"},
		{`{{ secret "bad name" }}`, `line 1, column 4: reference "bad name"`},
		{secretText, "line 1: reads no secret"},
		// What could run without bound is refused before the agent runs it.
		{`{{ secret "db" }}{{ range 2000000000 }}{{ end }}`, "line 1, column 27: range is not allowed"},
		{`{{ secret "db" }}{{ $n := 9 }}{{ range $n }}{{ end }}`, "line 1, column 40: range is not allowed"},
		{`{{ define "a" }}{{ template "b" }}{{ end }}{{ define "b" }}{{ template "a" }}{{ end }}{{ template "a" }}{{ secret "db" }}`,
			`line 1, column 72: template "a" is called again while it runs: recursion is not allowed`},
		{`{{ define "r" }}{{ template "r" }}{{ end }}{{ secret "db" }}`, `line 1, column 29: template "r" is called again while it runs`},
		{`{{ template "nowhere" }}{{ secret "db" }}`, `line 1, column 13: template "nowhere" is not defined`},
		{fanOut(20), "line 1, column 936: the template would run more than 100000 steps"},
	} {
		_, err := ParseTemplate(tt.text, homelab, publicCloud(t))
		var te *TemplateError
		if !errors.As(err, &te) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ParseTemplate(%q) = %v, want %q", tt.text, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), secretText) {
			t.Errorf("error quotes the template's text: %v", err)
		}
	}
}

// fanOut defines templates t0..tN-1, each calling the one below twice: no
// recursion, yet 2^N calls.
func fanOut(n int) string {
	var b strings.Builder
	b.WriteString(`{{ define "t0" }}{{ secret "db" }}{{ end }}`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, `{{ define "t%d" }}{{ template "t%d" }}{{ template "t%d" }}{{ end }}`, i, i-1, i-1)
	}
	fmt.Fprintf(&b, `{{ template "t%d" }}`, n-1)
	return b.String()
}

// TestParseTemplateDefines: defined templates stay usable while bounded.
func TestParseTemplateDefines(t *testing.T) {
	refs, err := ParseTemplate(fanOut(8)+`{{ block "b" . }}{{ secret "db#x" }}{{ end }}`, homelab, publicCloud(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 {
		t.Errorf("refs = %v, want db and db#x", refs)
	}
	if err := CheckTemplate(fanOut(8)); err != nil {
		t.Errorf("CheckTemplate = %v", err)
	}
}

func TestDecode(t *testing.T) {
	s := Spec{
		Version: Version, Vault: homelab, MountPath: DefaultMountPath, Containers: []string{"app"},
		Identity: Identity{ClientID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", TenantID: "t", TokenExpirationSeconds: 3600},
		Files: []File{
			{Name: "username", Mode: "0400", Secret: &Ref{Vault: homelab, Name: "app-pgsql", Path: "username"}},
			{Name: "conf", Mode: "0444", Template: `{{ secret "db" }} <&>`, Refs: map[string]Ref{"db": {Vault: homelab, Name: "db"}}},
		},
	}
	enc, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(enc, "<&>") {
		t.Errorf("Encode escapes HTML: %s", enc)
	}
	got, err := Decode([]byte(enc))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&s, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]SecretID{{Vault: homelab, Name: "app-pgsql"}, {Vault: homelab, Name: "db"}}, got.SecretIDs()); diff != "" {
		t.Errorf("SecretIDs (-want +got):\n%s", diff)
	}

	for _, tt := range []struct{ in, want string }{
		{`{"version":"v2"}`, `KVINJECT_SPEC has version "v2", this agent reads "v1"`},
		{`not json`, "KVINJECT_SPEC is not JSON"},
		{`{"version":"v1","extra":1}`, `unknown field "extra"`},
		{`{"version":"v1","vault":"x","mountPath":"rel","files":[]}`, `mountPath: "rel" must be a clean absolute path`},
		// The agent refuses what the webhook denies.
		{`{"version":"v1","mountPath":"/","files":[]}`, `mountPath: "/" must be a clean absolute path other than /`},
		{`{"version":"v1","mountPath":"/var/run","files":[]}`, `mountPath: "/var/run" overlaps /var/run/secrets/kvinject.io/token`},
		{`{"version":"v1","mountPath":"/s","identity":{"clientID":"c","tenantID":"t","tokenExpirationSeconds":3600},"files":[{"name":"x","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `identity clientID: "c" is not a GUID`},
		{`{"version":"v1","mountPath":"/s","identity":{"clientID":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","tenantID":"t","tokenExpirationSeconds":60},"files":[{"name":"x","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `identity tokenExpirationSeconds: 60 seconds`},
		{`{"version":"v1","mountPath":"/s","files":[]}`, "no files"},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"../x","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `file name "../x" has "/"`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0600","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `grants more than read`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0400","secret":{"vault":"http://kv1.vault.azure.net","name":"a"}}]}`, `must be an https:// URL`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0400"}]}`, `neither a secret nor a template`},
		// Field names are exact: encoding/json alone would take these.
		{`{"version":"v1","mountPAth":"/s","files":[]}`, `spec: unknown field "mountPAth" (field names are case-sensitive)`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0400","secret":{"Vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `spec.files[0].secret: unknown field "Vault"`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"c","mode":"0400","template":"{{ secret \"db\" }}","refs":{"db":{"vault":"https://kv1.vault.azure.net","NAME":"db"}}}]}`, `spec.files[0].refs["db"]: unknown field "NAME"`},
		// env variables: C identifiers, once each, valid references.
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"1X","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `env: variable name "1X" is not a C identifier`},
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"X","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}},{"name":"X","secret":{"vault":"https://kv1.vault.azure.net","name":"b"}}]}`, `env "X" listed twice`},
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"X","secret":{"vault":"http://kv1.vault.azure.net","name":"a"}}]}`, `env "X": vault "http://kv1.vault.azure.net" must be an https:// URL`},
		// env deliveries: the exec wrapper's env file has an app-readable mode.
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"X","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}],"envDelivery":"exec"}`, `envFileMode: mode "" is not an octal mode like 0440`},
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"X","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}],"envDelivery":"file-key-ref","envFileMode":"0444"}`, `envFileMode is only for envDelivery exec`},
		{`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"X","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}],"envDelivery":"shell"}`, `envDelivery "shell": want file-key-ref or exec`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":".kvinject-env","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}]}`, `file name ".kvinject-env" is reserved`},
		// refs are exactly the template's references.
		{`{"version":"v1","mountPath":"/s","files":[{"name":"c","mode":"0400","template":"{{ secret \"db\" }}","refs":{}}]}`, `file "c": refs has 0 entries, the template reads 1 references`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"c","mode":"0400","template":"{{ secret \"db\" }}","refs":{"other":{"vault":"https://kv1.vault.azure.net","name":"db"}}}]}`, `file "c": the template's reference "db" is not in refs`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"},"refs":{}}]}`, `file "x": refs belong to a template file`},
		{`{"version":"v1","mountPath":"/s","files":[{"name":"c","mode":"0400","template":"{{ range 9 }}{{ end }}{{ secret \"db\" }}","refs":{"db":{"vault":"https://kv1.vault.azure.net","name":"db"}}}]}`, `file "c": template line 1, column 10: range is not allowed`},
	} {
		_, err := Decode([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%s) = %v, want error containing %q", tt.in, err, tt.want)
		}
	}
	if _, err := Decode([]byte(`{"version":"v9"}`)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("unknown version: %v, want ErrUnsupportedVersion", err)
	}
}

// TestValidateParsed: ValidateParsed checks what Validate checks, except
// that it trusts a template file's refs to be its template's, as
// ParseTemplate made them.
func TestValidateParsed(t *testing.T) {
	db := Ref{Vault: homelab, Name: "db"}
	file := func(f File) *Spec {
		f.Name = "conf"
		if f.Mode == "" {
			f.Mode = "0400"
		}
		return &Spec{Version: Version, MountPath: DefaultMountPath, Files: []File{f}}
	}
	for _, tt := range []struct {
		name                 string
		s                    *Spec
		wantFull, wantParsed string // "" means accepted
	}{
		{"template and its refs", file(File{Template: `{{ secret "db" }}`, Refs: map[string]Ref{"db": db}}), "", ""},
		{"refs of another template", file(File{Template: `{{ secret "db" }}`, Refs: map[string]Ref{"other": db}}),
			`the template's reference "db" is not in refs`, ""},
		{"template that does not parse", file(File{Template: `{{ secret "db" `, Refs: map[string]Ref{"db": db}}),
			"template line 1", ""},
		{"template without refs", file(File{Template: `{{ secret "db" }}`}),
			"refs has 0 entries", "refs is empty"},
		{"ref that does not validate", file(File{Template: `{{ secret "db" }}`, Refs: map[string]Ref{"db": {Vault: "http://kv1.vault.azure.net", Name: "db"}}}),
			"must be an https:// URL", "must be an https:// URL"},
		{"refs on a secret file", file(File{Secret: &db, Refs: map[string]Ref{"db": db}}),
			"refs belong to a template file", "refs belong to a template file"},
		{"mode", file(File{Secret: &db, Mode: "0600"}), "grants more than read", "grants more than read"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				name     string
				validate func() error
				want     string
			}{{"Validate", tt.s.Validate, tt.wantFull}, {"ValidateParsed", tt.s.ValidateParsed, tt.wantParsed}} {
				err := c.validate()
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: %v, want nil", c.name, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
				}
			}
		})
	}
}

func TestParseAuthorityHost(t *testing.T) {
	public, _ := LookupCloud(DefaultCloud)
	china, _ := LookupCloud("AzureChinaCloud")
	for _, tt := range []struct {
		raw     string
		cloud   Cloud
		want    string
		wantErr bool
	}{
		{"", public, "https://login.microsoftonline.com/", false},
		{"", china, "https://login.chinacloudapi.cn/", false},
		{"https://login.example.com", public, "https://login.example.com/", false},
		{"https://login.example.com/", public, "https://login.example.com/", false},
		{"https://login.example.com:8443/tenant/", public, "https://login.example.com:8443/tenant/", false},
		{"http://login.example.com/", public, "", true},
		{"login.example.com", public, "", true},
		{"https://", public, "", true},
		{"https:///path", public, "", true},
		{"https://user@login.example.com/", public, "", true},
		{"https://login.example.com/?x=1", public, "", true},
		{"https://login.example.com/#f", public, "", true},
		{"https://login.example.com#", public, "", true},
		{"https://login.example.com?", public, "", true},
		{"https://login example.com/", public, "", true},
	} {
		got, err := ParseAuthorityHost(tt.raw, tt.cloud)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseAuthorityHost(%q, %s) = %q, %v; want %q, error %v", tt.raw, tt.cloud.Name, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "like "+tt.cloud.AuthorityHost) {
			t.Errorf("ParseAuthorityHost(%q): %v, want the cloud's host as the example", tt.raw, err)
		}
	}
}

// FuzzParseAuthorityHost: what it accepts is an https URL with a host, ends
// in "/", and is accepted again unchanged.
func FuzzParseAuthorityHost(f *testing.F) {
	for _, s := range []string{"", "https://login.example.com", "https://user@x/", "https://x/?q", "http://x/"} {
		f.Add(s)
	}
	public, _ := LookupCloud(DefaultCloud)
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseAuthorityHost(raw, public)
		if err != nil {
			if strings.Contains(raw, "@") && strings.Contains(err.Error(), raw) {
				t.Fatalf("the error quotes a value with a user: %v", err)
			}
			return
		}
		if !strings.HasPrefix(got, "https://") || !strings.HasSuffix(got, "/") {
			t.Fatalf("accepted %q as %q", raw, got)
		}
		again, err := ParseAuthorityHost(got, public)
		if err != nil || again != got {
			t.Fatalf("%q -> %q -> %q, %v", raw, got, again, err)
		}
	})
}

// TestAuthorityHostCredentialsNotQuoted: a password in an authority host
// never reaches the error, which the webhook logs and the agent writes to
// its termination message.
func TestAuthorityHostCredentialsNotQuoted(t *testing.T) {
	for _, raw := range []string{"https://user:s3cr3t-pw@login.example.com/", "https://user:s3cr3t-pw@login.example.com/%zz", "user:s3cr3t-pw@login.example.com"} {
		_, err := ParseAuthorityHost(raw, PublicCloud())
		if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("ParseAuthorityHost(%q) = %v, want refused without the password", raw, err)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"db", "db#a.0", "db/0123456789abcdef0123456789abcdef", "https://kv1.vault.azure.net/secrets/x#y", "https://kv1.vault.azure.net/secrets/x/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := Cloud{Name: DefaultCloud, VaultSuffix: "vault.azure.net"}
		r, err := ParseRef(s, homelab, c)
		if err != nil {
			return
		}
		if err := r.validate(); err != nil {
			t.Fatalf("accepted %q as %+v, which does not validate: %v", s, r, err)
		}
		again, err := ParseRef(r.String(), "", c)
		if err != nil || again != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), again, err)
		}
	})
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{`{{ secret "db" }}`, `a{{ if secret "x#y" }}{{ end }}`, `{{ define "x" }}{{ secret "q" }}{{ end }}{{ template "x" }}`, `{{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		refs, err := ParseTemplate(s, homelab, Cloud{Name: DefaultCloud, VaultSuffix: "vault.azure.net"})
		if err != nil {
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("error is not a *TemplateError: %v", err)
			}
			return
		}
		if len(refs) == 0 {
			t.Fatalf("accepted a template with no secret")
		}
		for k, r := range refs {
			if err := r.validate(); err != nil {
				t.Fatalf("ref %q -> %+v does not validate: %v", k, r, err)
			}
		}
	})
}

// FuzzDecode feeds arbitrary KVINJECT_SPEC values to the agent's decoder:
// whatever it accepts is valid and encodes back to an equal spec.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":"v1","vault":"https://homelab-kv.vault.azure.net","mountPath":"/var/run/secrets/kvinject","containers":["app"],"identity":{"clientID":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","tenantID":"t","tokenExpirationSeconds":3600},"files":[{"name":"username","mode":"0444","secret":{"vault":"https://homelab-kv.vault.azure.net","name":"app-pgsql","path":"username"}}]}`))
	f.Add([]byte(`{"version":"v1","mountPath":"/s","files":[{"name":"c","mode":"0400","template":"{{ secret \"db\" }}","refs":{"db":{"vault":"https://kv1.vault.azure.net","name":"db"}}}]}`))
	f.Add([]byte(`{"version":"v1","mountPath":"/s","files":[],"env":[{"name":"PASSWORD","secret":{"vault":"https://kv1.vault.azure.net","name":"db","path":"password"}}]}`))
	f.Add([]byte(`{"version":"v1","mountPath":"/s","files":[{"name":"x","mode":"0400","secret":{"vault":"https://kv1.vault.azure.net","name":"a"}}],"cache":{"url":"https://kvinject-cache.kvinject-system.svc","ca":"-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBATAKBggqhkjOPQQDAjAAMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAAMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END CERTIFICATE-----\n","required":true}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode([]byte(enc))
		if err != nil {
			t.Fatalf("re-encoded spec does not decode: %v", err)
		}
		if diff := cmp.Diff(s, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// TestBuiltinFuncs keeps builtinFuncs true to text/template: ParseTemplate
// accepts a function only if the agent's template.Parse will.
func TestBuiltinFuncs(t *testing.T) {
	for _, name := range builtinFuncs {
		if _, err := template.New("t").Parse("{{ " + name + " }}"); err != nil {
			t.Errorf("%s is not a text/template builtin: %v", name, err)
		}
	}
	if _, err := template.New("t").Parse("{{ notABuiltin }}"); err == nil {
		t.Error("text/template accepts an undefined function: the check above proves nothing")
	}
	for name := range knownFuncs {
		if _, err := template.New("t").Funcs(TemplateFuncs(nil)).Parse("{{ " + name + " }}"); err != nil {
			t.Errorf("ParseTemplate accepts %s, which the agent's parser rejects: %v", name, err)
		}
	}
}

func TestQuote(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"db", `"db"`},
		{strings.Repeat("x", MaxQuoted), `"` + strings.Repeat("x", MaxQuoted) + `"`},
		{strings.Repeat("x", MaxQuoted+1), `"` + strings.Repeat("x", MaxQuoted) + `"… (81 bytes)`},
		// Cut on a character boundary: 79 bytes of x, then a 3-byte rune.
		{strings.Repeat("x", MaxQuoted-1) + "€€", `"` + strings.Repeat("x", MaxQuoted-1) + `"… (85 bytes)`},
	} {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%d bytes) = %s, want %s", len(tt.in), got, tt.want)
		}
	}
}

// Quote never returns more than MaxQuotedLen bytes, however the value is
// escaped; invalid UTF-8 is escaped the most (\xNN per byte).
func FuzzQuote(f *testing.F) {
	f.Add("db")
	f.Add(strings.Repeat("\x9e", 4*MaxQuoted))
	f.Add(strings.Repeat("\U0010FFFF", MaxQuoted))
	f.Fuzz(func(t *testing.T, s string) {
		if got := Quote(s); len(got) > MaxQuotedLen {
			t.Fatalf("Quote(%d bytes) returned %d bytes, more than MaxQuotedLen %d", len(s), len(got), MaxQuotedLen)
		}
	})
}

// TestCloudFlag: every program's --cloud is a *Cloud; a name sets the
// whole cloud, an unknown one is refused and leaves it as it was.
func TestCloudFlag(t *testing.T) {
	c := PublicCloud()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&c, "cloud", CloudUsage())
	if err := fs.Parse([]string{"--cloud=AzureChinaCloud"}); err != nil {
		t.Fatal(err)
	}
	china, _ := LookupCloud("AzureChinaCloud")
	if diff := cmp.Diff(china, c); diff != "" || c.String() != "AzureChinaCloud" {
		t.Errorf("--cloud=AzureChinaCloud (-want +got):\n%s", diff)
	}
	if err := c.Set("Mars"); err == nil || !strings.Contains(err.Error(), `unknown cloud "Mars"`) || c != china {
		t.Errorf("Set(Mars) = %v, cloud now %+v", err, c)
	}
	var none *Cloud
	if none.String() != "" || (&Cloud{}).String() != "" {
		t.Error("the zero cloud has a name")
	}
}
