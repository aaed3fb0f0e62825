package execwrap

import (
	"errors"
	"strings"
	"testing"
)

// The cases of the kubelet's own reader (pkg/kubelet/util/env).
func TestLookupEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data, key, want string
		found, err            bool
	}{
		{"simple", "A='1'\nB='2'\n", "B", "2", true, false},
		{"multi-line", "A='line1\nline2'\n", "A", "line1\nline2", true, false},
		{"comment and blank", "# c\n\n  A='x' # trailing\n", "A", "x", true, false},
		{"first wins", "A='1'\nA='2'\n", "A", "1", true, false},
		{"absent", "A='1'\n", "B", "", false, false},
		{"space after =", "A= 'x'\n", "A", "", true, false},
		{"no quotes", "A=x\n", "A", "", false, true},
		{"space before =", "A ='x'\n", "A", "", false, true},
		{"no =", "A\n", "A", "", false, true},
		{"unclosed", "A='x\n", "A", "", false, true},
		{"content after quote", "A='x'y\n", "A", "", false, true},
		{"bad line after the key", "A='x'\nbad\n", "A", "x", true, false},
		{"bad line before the key", "bad\nA='x'\n", "A", "", false, true},
		{"special characters", "A='$ \" # = ü $(B)'\n", "A", "$ \" # = ü $(B)", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, found, err := LookupEnv([]byte(tc.data), tc.key)
			if v != tc.want || found != tc.found || (err != nil) != tc.err {
				t.Errorf("got %q %v %v, want %q %v error:%v", v, found, err, tc.want, tc.found, tc.err)
			}
			if err != nil && !errors.Is(err, ErrEnvFileFormat) {
				t.Errorf("error %v is not ErrEnvFileFormat", err)
			}
		})
	}
}

// FuzzLookupEnv: any file is read without a panic and an error never
// quotes it; a value the agent writes is read back as it was.
func FuzzLookupEnv(f *testing.F) {
	f.Add([]byte("A='1'\n"), "A", "v")
	f.Add([]byte("A='x\ny'\n# c\nB= 'z'"), "B", "multi\nline")
	f.Fuzz(func(t *testing.T, data []byte, key, value string) {
		if _, _, err := LookupEnv(data, key); err != nil && len(data) > 20 && strings.Contains(err.Error(), string(data)) {
			t.Fatalf("the error quotes the file: %v", err)
		}
		if strings.ContainsAny(value, "'\x00\r") || value == "" || len(value) > 60000 {
			return // what the agent refuses
		}
		file := "OTHER='o'\nKEY='" + value + "'\n"
		got, found, err := LookupEnv([]byte(file), "KEY")
		if err != nil || !found || got != value {
			t.Fatalf("read back %q %v %v, want %q", got, found, err, value)
		}
	})
}
