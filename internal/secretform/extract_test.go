package secretform

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExtract(t *testing.T) {
	const db = `{"username":"superman","password":"louiselane","port":5432,"ratio":1.50,"tls":true,"none":null,
		"db":{"hosts":["a.example","b.example"],"opts":{ "x" : [1, 2] }},"empty":[],"s":"line1\nline2 \u00e9"}`
	tests := []struct {
		name, value, path string
		want              string
	}{
		{"whole value raw", "  not json \n", "", "  not json \n"},
		{"whole JSON value raw", db, "", db},
		{"string leaf raw", db, "username", "superman"},
		{"second key", db, "password", "louiselane"},
		{"escaped string decoded", db, "s", "line1\nline2 é"},
		{"number as written", db, "port", "5432"},
		{"float keeps its text", db, "ratio", "1.50"},
		{"boolean", db, "tls", "true"},
		{"null", db, "none", "null"},
		{"nested object compact", db, "db.opts", `{"x":[1,2]}`},
		{"array compact", db, "db.hosts", `["a.example","b.example"]`},
		{"array index", db, "db.hosts.1", "b.example"},
		{"nested array index", db, "db.opts.x.0", "1"},
		{"top-level array", `["p","q"]`, "1", "q"},
		{"surrounding space", "\n {\"a\":\"b\"} \n", "a", "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(tt.value, tt.path)
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("Extract(%q) (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestExtractErrors(t *testing.T) {
	const db = `{"username":"superman","password":"louiselane","db":{"hosts":["a.example"],"port":5432}}`
	tests := []struct {
		name, value, path string
		want              string
	}{
		{"missing key lists keys", db, "user", `property "user" is missing: no key "user" at the top level (it has keys "db", "password", "username")`},
		{"missing nested key", db, "db.pass", `property "db.pass" is missing: no key "pass" at "db" (it has keys "hosts", "port")`},
		{"not JSON", "louiselane", "password", `the value is not JSON (10 bytes), but property "password" was asked for`},
		{"JSON string value", `"louiselane"`, "password", `property "password" is missing: the top level is a JSON string, not an object or array, so it has no key "password"`},
		{"through a string", db, "username.x", `property "username.x" is missing: "username" is a JSON string, not an object or array, so it has no key "x"`},
		{"through a number", db, "db.port.x", `property "db.port.x" is missing: "db.port" is a JSON number, not an object or array, so it has no key "x"`},
		{"index out of range", db, "db.hosts.1", `property "db.hosts.1" is missing: "db.hosts" is an array of 1 elements and "1" is not an index 0 to 0`},
		{"index not a number", db, "db.hosts.first", `property "db.hosts.first" is missing: "db.hosts" is an array of 1 elements and "first" is not an index 0 to 0`},
		{"negative index", db, "db.hosts.-1", `property "db.hosts.-1" is missing: "db.hosts" is an array of 1 elements and "-1" is not an index 0 to 0`},
		{"leading zero index", db, "db.hosts.00", `property "db.hosts.00" is missing: "db.hosts" is an array of 1 elements and "00" is not an index 0 to 0`},
		{"empty array", `{"a":[]}`, "a.0", `property "a.0" is missing: "a" is an array of 0 elements and "0" is not an index (the array is empty)`},
		{"empty object", `{}`, "a", `property "a" is missing: no key "a" at the top level (it has no keys)`},
		{"one key", `{"k":"louiselane"}`, "a", `property "a" is missing: no key "a" at the top level (it has key "k")`},
		{"truncated JSON", `{"password":"louiselane"`, "password", `the value is not JSON (24 bytes), but property "password" was asked for`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(tt.value, tt.path)
			var pe *PropertyError
			if !errors.As(err, &pe) {
				t.Fatalf("Extract = %q, %v; want a *PropertyError", got, err)
			}
			got = []byte(pe.Problem)
			if pe.Detail != "" {
				got = []byte(pe.Problem + " (" + pe.Detail + ")")
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("problem (-want +got):\n%s", diff)
			}
			for _, secret := range []string{"superman", "louiselane", "a.example", "5432"} {
				if strings.Contains(pe.Problem+pe.Detail+pe.Fix, secret) {
					t.Errorf("problem %q or fix %q quotes the value %q", pe.Problem, pe.Fix, secret)
				}
			}
		})
	}
}

func TestExtractManyKeysAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 30 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%02d":1`, i)
	}
	b.WriteString("}")
	_, err := Extract(b.String(), "missing")
	var pe *PropertyError
	if !errors.As(err, &pe) || !strings.HasSuffix(pe.Detail, " and 10 more") {
		t.Errorf("Extract error = %v, want the key list capped with \" and 10 more\"", err)
	}
}
