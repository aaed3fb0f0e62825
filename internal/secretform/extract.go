package secretform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kvinject/kvinject/internal/spec"
)

// PropertyError says why a property path does not select a value. Its text
// names JSON keys, kinds and lengths, never a value: encoding/json errors are
// never wrapped because they can quote the input.
type PropertyError struct {
	Path    string // the ref's path, e.g. db.password
	Problem string
	// Detail lists what is there instead (the keys at that level): for the
	// container log only, since key names can be sensitive (Problem.Detail).
	Detail string
	Fix    string
}

func (e *PropertyError) Error() string { return e.Problem }

// maxListedKeys bounds how many keys a missing-key diagnostic lists.
const maxListedKeys = 20

// Extract returns what a file holds for a secret value and a ref's property
// path: the value itself when path is empty; otherwise the JSON value at the
// dot path, raw when it is a string and compact JSON when it is anything else.
func Extract(value, path string) ([]byte, error) {
	if path == "" {
		return []byte(value), nil
	}
	keys, err := spec.SplitPath(path)
	if err != nil {
		return nil, &PropertyError{Path: path, Problem: err.Error(), Fix: "fix the path in the annotation"}
	}
	cur := bytes.TrimSpace([]byte(value))
	if !json.Valid(cur) {
		return nil, &PropertyError{Path: path,
			Problem: fmt.Sprintf("the value is not JSON (%d bytes), but property %q was asked for", len(value), path),
			Fix:     "store the secret as a JSON object, or drop #" + path + " from the reference to get the whole value"}
	}
	for i, k := range keys {
		at := strings.Join(keys[:i], ".")
		where := "the top level"
		if at != "" {
			where = strconv.Quote(at)
		}
		switch kind := jsonKind(cur); kind {
		case "object":
			var m map[string]json.RawMessage
			if json.Unmarshal(cur, &m) != nil { // cannot happen: cur is valid JSON
				return nil, &PropertyError{Path: path, Problem: "the value's JSON does not decode"}
			}
			v, ok := m[k]
			if !ok {
				return nil, &PropertyError{Path: path,
					Problem: fmt.Sprintf("property %q is missing: no key %q at %s", path, k, where),
					Detail:  "it has " + listKeys(m),
					Fix:     "fix the path in the reference, or add the key to the secret"}
			}
			cur = bytes.TrimSpace(v)
		case "array":
			var a []json.RawMessage
			if json.Unmarshal(cur, &a) != nil {
				return nil, &PropertyError{Path: path, Problem: "the value's JSON does not decode"}
			}
			idx, err := strconv.Atoi(k)
			if err != nil || idx < 0 || idx >= len(a) || strconv.Itoa(idx) != k {
				return nil, &PropertyError{Path: path,
					Problem: fmt.Sprintf("property %q is missing: %s is an array of %d elements and %q is not an index %s", path, where, len(a), k, indexRange(len(a))),
					Fix:     "select an array element by its index, like hosts.0"}
			}
			cur = bytes.TrimSpace(a[idx])
		default:
			return nil, &PropertyError{Path: path,
				Problem: fmt.Sprintf("property %q is missing: %s is a JSON %s, not an object or array, so it has no key %q", path, where, kind, k),
				Fix:     "shorten the path in the reference"}
		}
	}
	if jsonKind(cur) == "string" {
		var s string
		if json.Unmarshal(cur, &s) != nil {
			return nil, &PropertyError{Path: path, Problem: "the value's JSON does not decode"}
		}
		return []byte(s), nil
	}
	var b bytes.Buffer
	if json.Compact(&b, cur) != nil {
		return nil, &PropertyError{Path: path, Problem: "the value's JSON does not decode"}
	}
	return b.Bytes(), nil
}

// jsonKind names the kind of a valid, trimmed JSON value by its first byte.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

func listKeys(m map[string]json.RawMessage) string {
	if len(m) == 0 {
		return "no keys"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	more := ""
	if len(keys) > maxListedKeys {
		more = fmt.Sprintf(" and %d more", len(keys)-maxListedKeys)
		keys = keys[:maxListedKeys]
	}
	for i, k := range keys {
		keys[i] = strconv.Quote(k)
	}
	noun := "keys"
	if len(m) == 1 {
		noun = "key"
	}
	return noun + " " + strings.Join(keys, ", ") + more
}

func indexRange(n int) string {
	if n == 0 {
		return "(the array is empty)"
	}
	return fmt.Sprintf("0 to %d", n-1)
}
