package credprovider

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCredential(t *testing.T) {
	tests := []struct {
		name, value string
		want        Credential
		wantErr     string
	}{
		{name: "dockerconfigjson with auth", value: `{"auths":{"https://mirror.example.com:5000/v2/":{"auth":"` + b64("u:p:with:colons") + `","email":"x@example.com"}}}`,
			want: Credential{Entries: map[string]AuthConfig{"mirror.example.com:5000": {Username: "u", Password: "p:with:colons"}}}},
		{name: "auth without padding", value: `{"auths":{"r.example.com":{"auth":"` + strings.TrimRight(b64("ab:c"), "=") + `"}}}`,
			want: Credential{Entries: map[string]AuthConfig{"r.example.com": {Username: "ab", Password: "c"}}}},
		{name: "auth overrides username and password", value: `{"auths":{"r.example.com":{"auth":"` + b64("a:b") + `","username":"x","password":"y"}}}`,
			want: Credential{Entries: map[string]AuthConfig{"r.example.com": {Username: "a", Password: "b"}}}},
		{name: "username and password, a path, Docker Hub", value: `{"auths":{"r.example.com/team/":{"username":"x","password":"y"},"https://index.docker.io/v1/":{"auth":"` + b64("h:k") + `"}}}`,
			want: Credential{Entries: map[string]AuthConfig{"r.example.com/team/": {Username: "x", Password: "y"}, "index.docker.io": {Username: "h", Password: "k"}}}},
		{name: "one registry twice: the first key in order wins", value: `{"auths":{"r.example.com":{"auth":"` + b64("b:2") + `"},"https://r.example.com":{"auth":"` + b64("a:1") + `"}}}`,
			want: Credential{Entries: map[string]AuthConfig{"r.example.com": {Username: "a", Password: "1"}}}},
		{name: "user:password with a line break", value: "user:pa:ss\n", want: Credential{Any: &AuthConfig{Username: "user", Password: "pa:ss"}}},
		{name: "JSON username and password", value: ` {"username":"u","password":"p","registry":"ignored"}`, want: Credential{Any: &AuthConfig{Username: "u", Password: "p"}}},

		{name: "two lines", value: "user:s3cret\nmore", wantErr: "not a registry credential: the value (16 bytes) is neither JSON nor one line user:password"},
		{name: "no colon", value: "s3cretonly", wantErr: "not a registry credential: the value (10 bytes) is neither JSON nor one line user:password"},
		{name: "empty user", value: ":s3cret", wantErr: "not a registry credential: the value (7 bytes) is neither JSON nor one line user:password"},
		{name: "broken JSON", value: `{"auths":`, wantErr: "not a registry credential: the value starts like JSON but is not a JSON object (9 bytes)"},
		{name: "other JSON", value: `{"token":"t0ps3cret"}`, wantErr: `not a registry credential: a JSON value must be a dockerconfigjson {"auths":{...}} or {"username":...,"password":...} (it has 1 keys, neither "auths" nor both "username" and "password")`},
		{name: "number password", value: `{"username":"u","password":12345}`, wantErr: `not a registry credential: "username" and "password" must be JSON strings`},
		{name: "no entries", value: `{"auths":{}}`, wantErr: `not a registry credential: the dockerconfigjson has no entry in "auths"`},
		{name: "auth not base64", value: `{"auths":{"r.example.com":{"auth":"not base64 s3cret!"}}}`, wantErr: `not a registry credential: the dockerconfigjson entry "r.example.com": "auth" is not base64`},
		{name: "auth without a colon", value: `{"auths":{"r.example.com":{"auth":"` + b64("s3cretonly") + `"}}}`, wantErr: `not a registry credential: the dockerconfigjson entry "r.example.com": "auth" is not base64 of user:password`},
		{name: "empty entry", value: `{"auths":{"r.example.com":{}}}`, wantErr: `not a registry credential: the dockerconfigjson entry "r.example.com": no "auth", "username" or "password"`},
		{name: "entry not an object", value: `{"auths":{"r.example.com":"s3cret"}}`, wantErr: `not a registry credential: the dockerconfigjson entry "r.example.com" must be an object with "auth" or "username" and "password" strings`},
		{name: "not UTF-8", value: "us\xffer:s3cret", wantErr: "not a registry credential: the username and password must be UTF-8 text"},
		{name: "too big", value: strings.Repeat("a", MaxValueBytes+1), wantErr: "not a registry credential: the value is 65537 bytes, more than 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCredential(tt.value)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
				if !errors.Is(err, ErrCredential) {
					t.Errorf("%v is not ErrCredential", err)
				}
				for _, s := range []string{"s3cret", "12345"} {
					if strings.Contains(gotErr, s) {
						t.Errorf("the error quotes the value: %s", gotErr)
					}
				}
			}
			if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("credential (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseImage(t *testing.T) {
	tests := []struct{ in, registry, wantErr string }{
		{in: "mirror.example.com:5000/team/app", registry: "mirror.example.com:5000"},
		{in: "mirror.example.com:5000/team/app:1.2@sha256:abc", registry: "mirror.example.com:5000"},
		{in: "docker.io/library/nginx", registry: "docker.io"},
		{in: "nginx:1.27", registry: "docker.io"},
		{in: "bitnami/redis", registry: "docker.io"},
		{in: "index.docker.io/library/nginx", registry: "docker.io"},
		{in: "localhost/app", registry: "localhost"},
		{in: "*.example.com/app", wantErr: `image "*.example.com/app" is not an image name`},
		{in: "r.example.com/a b", wantErr: `image "r.example.com/a b" is not an image name`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			im, err := ParseImage(tt.in)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if im.Registry != tt.registry {
				t.Errorf("registry %q, want %q", im.Registry, tt.registry)
			}
		})
	}
}

// TestAuth: the entries answered for an image follow the kubelet's
// matching (same labels, '*' per label, same port, path prefix), and
// hold every entry of the image's registry, since the kubelet caches the
// answer per registry.
func TestAuth(t *testing.T) {
	a := func(u string) AuthConfig { return AuthConfig{Username: u, Password: "p"} }
	cred := Credential{Entries: map[string]AuthConfig{
		"mirror.example.com:5000":  a("mirror"),
		"*.example.org":            a("glob"),
		"ghcr.example.net/team-a":  a("team-a"),
		"ghcr.example.net/team-ab": a("team-ab"),
		"index.docker.io":          a("hub"),
		"plain.example.com":        a("plain"),
	}}
	tests := []struct {
		image   string
		want    map[string]AuthConfig
		wantErr string
	}{
		{image: "mirror.example.com:5000/team/app", want: map[string]AuthConfig{"mirror.example.com:5000": a("mirror")}},
		{image: "mirror.example.com/team/app", wantErr: "the dockerconfigjson has no entry for mirror.example.com (it has *.example.org, ghcr.example.net, index.docker.io, mirror.example.com:5000, plain.example.com)"},
		{image: "plain.example.com:443/app", wantErr: "the dockerconfigjson has no entry for plain.example.com:443 (it has *.example.org, ghcr.example.net, index.docker.io, mirror.example.com:5000, plain.example.com)"},
		{image: "registry.example.org/app", want: map[string]AuthConfig{"*.example.org": a("glob")}},
		{image: "a.registry.example.org/app", wantErr: "the dockerconfigjson has no entry for a.registry.example.org (it has *.example.org, ghcr.example.net, index.docker.io, mirror.example.com:5000, plain.example.com)"},
		{image: "ghcr.example.net/team-a/app", want: map[string]AuthConfig{"ghcr.example.net/team-a": a("team-a"), "ghcr.example.net/team-ab": a("team-ab")}},
		{image: "ghcr.example.net/team-b/app", wantErr: "the dockerconfigjson has entries for ghcr.example.net, but for other repository paths than the image's"},
		{image: "docker.io/library/nginx", want: map[string]AuthConfig{"index.docker.io": a("hub")}},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			im, err := ParseImage(tt.image)
			if err != nil {
				t.Fatal(err)
			}
			got, err := cred.Auth(im)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
				var ne *NoEntryError
				if !errors.As(err, &ne) {
					t.Errorf("%v is not a *NoEntryError", err)
				}
			}
			if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("auth (-want +got):\n%s", diff)
			}
		})
	}

	single := Credential{Any: &AuthConfig{Username: "u", Password: "p"}}
	im, _ := ParseImage("mirror.example.com:5000/team/app")
	got, err := single.Auth(im)
	if diff := cmp.Diff(map[string]AuthConfig{"mirror.example.com:5000": {Username: "u", Password: "p"}}, got); err != nil || diff != "" {
		t.Errorf("user:password answers for the image's registry: %v (-want +got):\n%s", err, diff)
	}
}

// FuzzDockerConfig: ParseCredential never panics, its errors never quote a
// credential field of the input, and what it accepts encodes back into a
// dockerconfigjson that parses to the same entries.
func FuzzDockerConfig(f *testing.F) {
	f.Add(mirrorCred)
	f.Add(`{"auths":{"r.example.com":{"auth":"` + b64("u:p") + `"}}}`)
	f.Add(`{"auths":{"r.example.com":{"auth":"!!!secret"}}}`)
	f.Add(`{"auths":{"https://r.example.com/v1/":{"username":"u","password":"secret"}}}`)
	f.Add(`{"username":"u","password":"secret"}`)
	f.Add("user:secret\n")
	f.Add(`{"auths":{"*.example.org:5000/x":{"auth":"` + b64("u:secret") + `"},"r.example.com":{"auth":"` + b64("secretonly") + `"}}}`)
	f.Fuzz(func(t *testing.T, value string) {
		cred, err := ParseCredential(value)
		if err != nil {
			for _, s := range credentialFields(value) {
				if len(s) >= 6 && strings.Contains(err.Error(), s) {
					t.Fatalf("error %q quotes the credential field %q", err, s)
				}
			}
			return
		}
		if cred.Entries == nil {
			if cred.Any == nil {
				t.Fatal("accepted with no credential")
			}
			return
		}
		auths := map[string]map[string]string{}
		for k, a := range cred.Entries {
			if a.Username == "" && a.Password == "" {
				continue // an auth of ":" has no other encoding
			}
			auths[k] = map[string]string{"username": a.Username, "password": a.Password}
		}
		if len(auths) == 0 {
			return
		}
		b, err := json.Marshal(map[string]any{"auths": auths})
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCredential(string(b))
		if err != nil {
			t.Fatalf("re-encoded credential refused: %v", err)
		}
		for k := range auths {
			if back.Entries[k] != cred.Entries[k] {
				t.Fatalf("entry %q changed on the round trip", k)
			}
		}
		// Matching any image must not panic.
		if im, err := ParseImage("r.example.com/x"); err == nil {
			_, _ = cred.Auth(im)
		}
	})
}

// credentialFields lists what in a value is a credential: the password of
// user:password, and the auth, username and password strings of JSON.
func credentialFields(value string) []string {
	var out []string
	if _, pw, ok := strings.Cut(strings.TrimRight(value, "\r\n"), ":"); ok {
		out = append(out, pw)
	}
	var top map[string]json.RawMessage
	if json.Unmarshal([]byte(strings.TrimSpace(value)), &top) != nil {
		return out
	}
	str := func(raw json.RawMessage) {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			out = append(out, s)
		}
	}
	str(top["username"])
	str(top["password"])
	var auths map[string]map[string]json.RawMessage
	if json.Unmarshal(top["auths"], &auths) == nil {
		for _, e := range auths {
			str(e["auth"])
			str(e["username"])
			str(e["password"])
		}
	}
	return out
}
