package suggest

import "testing"

func TestClosest(t *testing.T) {
	tests := []struct {
		name       string
		candidates []string
		max        int
		want       string
		ok         bool
	}{
		{"pqsql-creds", []string{"mirror-registry-creds", "pgsql-creds"}, 3, "pgsql-creds", true},
		{"kvinject.io/valut", []string{"kvinject.io/vault", "kvinject.io/containers"}, 3, "kvinject.io/vault", true},
		{"something-else", []string{"pgsql-creds"}, 3, "", false},
		{"", nil, 3, "", false},
	}
	for _, tt := range tests {
		got, ok := Closest(tt.name, tt.candidates, tt.max)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Closest(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "abc", 3}, {"abc", "abc", 0}, {"kitten", "sitting", 3}, {"secrets-x", "secret-x", 1}} {
		if got := Distance(c.a, c.b); got != c.d {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}
