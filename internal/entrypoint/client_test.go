package entrypoint

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kvinject/kvinject/internal/testkit/registrytest"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	armv6 = v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}
	armv7 = v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

// awkward are arguments that break naive quoting in YAML, JSON or a shell.
var awkward = []string{"--msg=it's \"quoted\"", "a b\tc\nd", "$(HOME) ${X} `id`", "#not-a-comment", "key: value", "- item",
	"ünïcødé ✓", "back\\slash", "", "'", "null", "0755", "\u2028\u0085\u007f"}

// world is a registry with the images the tests read.
type world struct {
	reg                                                    *registrytest.Registry
	single, multi, armOnly, nothing, onlyCmd, odd, hugeCfg string
}

func newWorld(t *testing.T) world {
	reg := registrytest.New(t)
	img := func(p v1.Platform, ep, cmd []string) v1.Image {
		return registrytest.Image(t, p, v1.Config{Entrypoint: ep, Cmd: cmd, Env: []string{"PATH=/usr/bin"}})
	}
	huge := registrytest.Image(t, amd64, v1.Config{Entrypoint: []string{"/app"}, Env: []string{"BIG=" + strings.Repeat("x", 16<<10)}})
	return world{
		reg:    reg,
		single: reg.Push(t, "docker/dbreader:v1", img(amd64, []string{"/dbreader"}, []string{"--serve"})),
		multi: reg.Push(t, "multi/app:2", registrytest.Index(
			registrytest.Entry{Platform: amd64, Image: img(amd64, []string{"/app-amd64"}, []string{"run"})},
			registrytest.Entry{Platform: arm64, Image: img(arm64, []string{"/app-arm64"}, []string{"run"})},
			registrytest.Entry{Platform: armv6, Image: img(armv6, []string{"/app-armv6"}, nil)},
			registrytest.Entry{Platform: armv7, Image: img(armv7, []string{"/app-armv7"}, nil)},
			registrytest.Entry{Platform: v1.Platform{OS: "unknown", Architecture: "unknown"}, Image: img(v1.Platform{}, nil, nil)},
		)),
		armOnly: reg.Push(t, "arm/only:1", registrytest.Index(registrytest.Entry{Platform: arm64, Image: img(arm64, []string{"/a"}, nil)},
			registrytest.Entry{Platform: v1.Platform{OS: "windows", Architecture: "amd64"}, Image: img(v1.Platform{OS: "windows", Architecture: "amd64"}, []string{"a.exe"}, nil)})),
		nothing: reg.Push(t, "empty/img:1", img(amd64, nil, nil)),
		onlyCmd: reg.Push(t, "cmd/only:1", img(amd64, nil, []string{"/bin/sh", "-c", "exec app"})),
		odd:     reg.Push(t, "odd/args:1", img(amd64, []string{"/odd"}, awkward)),
		hugeCfg: reg.Push(t, "huge/config:1", huge),
	}
}

func TestResolve(t *testing.T) {
	w := newWorld(t)
	wrong := registrytest.New(t) // another registry's credentials: refused here
	wrongKeys := wrongPassword{host: w.reg.Host}
	tests := []struct {
		name     string
		opts     Options
		reqs     []Request
		want     []Annotation // Request, Container, Program, Platform compared
		wantErrs []Kind       // in order of the failed requests
		errText  []string     // each appears in the error
	}{
		{name: "single platform, ENTRYPOINT then CMD",
			reqs: []Request{{Image: w.single, Container: "secret-reader"}},
			want: []Annotation{{Container: "secret-reader", Program: []string{"/dbreader", "--serve"}, Platform: "linux/amd64"}}},
		{name: "container name from the repository",
			reqs: []Request{{Image: w.single}},
			want: []Annotation{{Container: "dbreader", Program: []string{"/dbreader", "--serve"}, Platform: "linux/amd64"}}},
		{name: "entrypoint only",
			reqs: []Request{{Image: w.single, EntrypointOnly: true}},
			want: []Annotation{{Container: "dbreader", Program: []string{"/dbreader"}, Platform: "linux/amd64"}}},
		{name: "entrypoint only of an image with CMD alone is empty",
			reqs: []Request{{Image: w.onlyCmd, EntrypointOnly: true}},
			want: []Annotation{{Container: "only", Program: []string{}, Platform: "linux/amd64"}}},
		{name: "CMD alone",
			reqs: []Request{{Image: w.onlyCmd}},
			want: []Annotation{{Container: "only", Program: []string{"/bin/sh", "-c", "exec app"}, Platform: "linux/amd64"}}},
		{name: "awkward arguments",
			reqs: []Request{{Image: w.odd}},
			want: []Annotation{{Container: "args", Program: append([]string{"/odd"}, awkward...), Platform: "linux/amd64"}}},
		{name: "index, default platform",
			reqs: []Request{{Image: w.multi}},
			want: []Annotation{{Container: "app", Program: []string{"/app-amd64", "run"}, Platform: "linux/amd64"}}},
		{name: "index, arm64 without its variant",
			opts: Options{Platform: "linux/arm64"},
			reqs: []Request{{Image: w.multi}},
			want: []Annotation{{Container: "app", Program: []string{"/app-arm64", "run"}, Platform: "linux/arm64"}}},
		{name: "index, aarch64/v8 is arm64",
			opts: Options{Platform: "linux/aarch64/v8"},
			reqs: []Request{{Image: w.multi}},
			want: []Annotation{{Container: "app", Program: []string{"/app-arm64", "run"}, Platform: "linux/arm64/v8"}}},
		{name: "index, arm v7",
			opts: Options{Platform: "linux/arm/v7"},
			reqs: []Request{{Image: w.multi}},
			want: []Annotation{{Container: "app", Program: []string{"/app-armv7"}, Platform: "linux/arm/v7"}}},
		{name: "index without the platform lists what it has",
			reqs:     []Request{{Image: w.armOnly}},
			wantErrs: []Kind{KindPlatform},
			errText:  []string{"no image for platform linux/amd64; the image offers: linux/arm64/v8, windows/amd64"}},
		{name: "single image of another platform",
			opts:     Options{Platform: "linux/s390x"},
			reqs:     []Request{{Image: w.single}},
			wantErrs: []Kind{KindPlatform},
			errText:  []string{"the image offers: linux/amd64"}},
		{name: "neither ENTRYPOINT nor CMD",
			reqs:     []Request{{Image: w.nothing}},
			wantErrs: []Kind{KindNoProgram},
			errText:  []string{"neither ENTRYPOINT nor CMD"}},
		{name: "wrong credentials",
			opts:     Options{Keychain: wrongKeys},
			reqs:     []Request{{Image: w.single}},
			wantErrs: []Kind{KindUnauthorized},
			errText:  []string{"refused the credentials found for it", "docker login " + w.reg.Host}},
		{name: "no credentials",
			opts:     Options{Keychain: wrong.Keychain()},
			reqs:     []Request{{Image: w.single}},
			wantErrs: []Kind{KindUnauthorized},
			errText:  []string{"wants credentials and none were found for it"}},
		{name: "unknown CA",
			opts:     Options{CAFiles: []string{wrong.CAFile}},
			reqs:     []Request{{Image: w.single}},
			wantErrs: []Kind{KindUnknownAuthority},
			errText:  []string{"signed by an authority not trusted here"}},
		{name: "no such tag",
			reqs:     []Request{{Image: w.reg.Host + "/docker/dbreader:v2"}},
			wantErrs: []Kind{KindNotFound},
			errText:  []string{"no such repository, tag or digest"}},
		{name: "config over the response limit",
			opts:     Options{MaxResponseBytes: 8 << 10},
			reqs:     []Request{{Image: w.hugeCfg}},
			wantErrs: []Kind{KindTooLarge},
			errText:  []string{"over the size limit"}},
		{name: "not a reference, a bad container name, and one good",
			reqs:     []Request{{Image: "UPPER/Case::x"}, {Image: w.single, Container: "Not_A_Label"}, {Image: w.single, Container: "ok"}},
			want:     []Annotation{{}, {}, {Container: "ok", Program: []string{"/dbreader", "--serve"}, Platform: "linux/amd64"}},
			wantErrs: []Kind{KindReference, KindReference},
			errText:  []string{"image UPPER/Case::x: not an image reference", `container name "Not_A_Label"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := tt.opts
			if o.CAFiles == nil {
				o.CAFiles = []string{w.reg.CAFile}
			}
			if o.Keychain == nil {
				o.Keychain = w.reg.Keychain()
			}
			o.Complete()
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			c, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Resolve(context.Background(), tt.reqs)
			for i := range got {
				if got[i].Program != nil && got[i].Digest == "" {
					t.Errorf("annotation %d: no digest", i)
				}
				got[i].Request, got[i].Digest = Request{}, ""
			}
			want := tt.want
			if want == nil {
				want = make([]Annotation, len(tt.reqs))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantErrs, kinds(err)); diff != "" {
				t.Errorf("error kinds (-want +got):\n%s\nerror: %v", diff, err)
			}
			for _, s := range tt.errText {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("error %v\ndoes not say %q", err, s)
				}
			}
			if err != nil && strings.Contains(err.Error(), w.reg.Password) {
				t.Errorf("error holds the registry password: %v", err)
			}
		})
	}
}

func kinds(err error) []Kind {
	if err == nil {
		return nil
	}
	var out []Kind
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ie *ImageError
		if !errors.As(e, &ie) {
			out = append(out, -1)
			continue
		}
		out = append(out, ie.Kind)
	}
	return out
}

type wrongPassword struct{ host string }

func (k wrongPassword) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: "puller", Password: "wrong"}, nil
}

// TestResolveUnreachable: a closed port and a registry that never answers
// fail within the time limit, named as such.
func TestResolveUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A registry that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(conns)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	defer func() {
		silent.Close()
		for c := range conns {
			c.Close()
		}
	}()
	o := Options{Timeout: 500 * time.Millisecond, Keychain: authn.NewMultiKeychain()}
	o.Complete()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Resolve(context.Background(), []Request{{Image: closed + "/a/b:1"}, {Image: silent.Addr().String() + "/a/c:1"}})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
	if diff := cmp.Diff([]Kind{KindUnreachable, KindUnreachable}, kinds(err)); diff != "" {
		t.Errorf("kinds (-want +got):\n%s\n%v", diff, err)
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{Platform: "linux", Timeout: -1, Concurrency: 100, MaxResponseBytes: 10}
	err := o.Validate()
	for _, s := range []string{"want os/arch[/variant]", "timeout", "concurrency", "response limit"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("Validate() = %v, want it to say %q", err, s)
		}
	}
	var ok Options
	ok.Complete()
	if err := ok.Validate(); err != nil {
		t.Errorf("completed zero options: %v", err)
	}
}

func TestNewCAFile(t *testing.T) {
	o := Options{CAFiles: []string{"/nonexistent/ca.pem"}}
	o.Complete()
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Errorf("New() = %v, want the CA file named", err)
	}
}
