package entrypoint

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

func TestLine(t *testing.T) {
	tests := []struct {
		program []string
		want    string
	}{
		{[]string{"/secret-reader", "--serve"}, `kvinject.io/entrypoint-app: '["/secret-reader","--serve"]'`},
		{[]string{}, `kvinject.io/entrypoint-app: '[]'`},
		{[]string{"it's", `"q"`, "a\nb", "<&>"}, `kvinject.io/entrypoint-app: '["it''s","\"q\"","a\nb","<&>"]'`},
		{[]string{"\x7f\u0085\u2028\ufeff", "ü"}, `kvinject.io/entrypoint-app: '["\u007f\u0085\u2028\ufeff","ü"]'`},
	}
	for _, tt := range tests {
		a := Annotation{Container: "app", Program: tt.program}
		if got := a.Line(); got != tt.want {
			t.Errorf("Line(%q) = %s, want %s", tt.program, got, tt.want)
		}
		roundTrip(t, tt.program)
	}
	roundTrip(t, awkward)
}

// roundTrip checks that the line, read as YAML then its value as JSON,
// gives program back.
func roundTrip(t *testing.T, program []string) {
	t.Helper()
	a := Annotation{Container: "app", Program: program}
	var m map[string]string
	if err := yaml.Unmarshal([]byte(a.Line()), &m); err != nil {
		t.Fatalf("YAML %s: %v", a.Line(), err)
	}
	var got []string
	if err := json.Unmarshal([]byte(m[a.Key()]), &got); err != nil {
		t.Fatalf("JSON %s: %v", m[a.Key()], err)
	}
	if diff := cmp.Diff(program, got); diff != "" {
		t.Errorf("round trip of %s (-want +got):\n%s", a.Line(), diff)
	}
	if strings.ContainsAny(a.Line(), "\n\r") {
		t.Errorf("line spans lines: %q", a.Line())
	}
}

func FuzzLine(f *testing.F) {
	for _, a := range awkward {
		f.Add(a, "x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return // image configs are JSON: their strings are valid UTF-8
		}
		roundTrip(t, []string{a, b})
	})
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in      string
		want    Platform
		wantErr bool
	}{
		{in: "linux/amd64", want: Platform{OS: "linux", Arch: "amd64"}},
		{in: "linux/arm/v7", want: Platform{OS: "linux", Arch: "arm", Variant: "v7"}},
		{in: "linux/x86_64", want: Platform{OS: "linux", Arch: "amd64"}},
		{in: "linux/aarch64", want: Platform{OS: "linux", Arch: "arm64"}},
		{in: "windows/amd64", want: Platform{OS: "windows", Arch: "amd64"}},
		{in: "linux", wantErr: true},
		{in: "linux/", wantErr: true},
		{in: "Linux/AMD64", wantErr: true},
		{in: "linux/amd64/v1/x", wantErr: true},
		{in: "linux/amd 64", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePlatform(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePlatform(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
		}
		if got != tt.want {
			t.Errorf("ParsePlatform(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParsePlatform(f *testing.F) {
	for _, s := range []string{"linux/amd64", "linux/arm/v7", "linux/aarch64", "a//b", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePlatform(s)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			return
		}
		again, err := ParsePlatform(p.String())
		if err != nil || again != p {
			t.Errorf("ParsePlatform(%q) = %+v, whose String %q parses to %+v, %v", s, p, p.String(), again, err)
		}
	})
}
