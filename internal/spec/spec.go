package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strconv"
	"strings"
)

// Version is the version of the Spec this build writes and reads. The agent
// refuses any other, so a webhook and agent from different releases fail
// loudly instead of misreading each other.
const Version = "v1"

// Spec is the normalised, validated description of one pod's injection. The
// webhook builds it from annotations and passes it to the agent as JSON in
// KVINJECT_SPEC; every vault is a full URL and every ref is parsed.
type Spec struct {
	Version string `json:"version"`
	// Vault is the default vault's URL, e.g. https://homelab-kv.vault.azure.net.
	Vault string `json:"vault"`
	// MountPath is where the files appear in the target containers.
	MountPath string `json:"mountPath"`
	// Containers are the names of the containers that mount the files.
	Containers []string `json:"containers"`
	Identity   Identity `json:"identity"`
	Files      []File   `json:"files"`
	// Env are the variables the agent writes into EnvFileName, for the
	// kubelet to give the containers through fileKeyRef, or for the exec
	// wrapper (EnvDelivery).
	Env []EnvVar `json:"env,omitempty"`
	// EnvDelivery is how the containers get Env: DeliveryFileKeyRef (also
	// when empty) or DeliveryExec, for which the agent copies the wrapper
	// into BinVolumeName and writes EnvFileName with EnvFileMode, since the
	// app's own user reads it.
	EnvDelivery string `json:"envDelivery,omitempty"`
	EnvFileMode string `json:"envFileMode,omitempty"`
	// Cache, when set, is asked before Azure.
	Cache *Cache `json:"cache,omitempty"`
	// OnChange, when set, is what the kvinject-refresh sidecar does to the
	// containers a refresh changed (AnnotationOnChange).
	OnChange *OnChange `json:"onChange,omitempty"`
}

// validateDelivery checks EnvDelivery and EnvFileMode.
func (s *Spec) validateDelivery() error {
	switch s.EnvDelivery {
	case "", DeliveryFileKeyRef:
		if s.EnvFileMode != "" {
			return errors.New("envFileMode is only for envDelivery " + DeliveryExec)
		}
	case DeliveryExec:
		if len(s.Env) == 0 {
			return errors.New("envDelivery " + DeliveryExec + " without env")
		}
		if _, err := ParseMode(s.EnvFileMode); err != nil {
			return fmt.Errorf("envFileMode: %w", err)
		}
	default:
		return fmt.Errorf("envDelivery %s: want %s or %s", Quote(s.EnvDelivery), DeliveryFileKeyRef, DeliveryExec)
	}
	return nil
}

// EnvVar is one environment variable from a secret reference.
type EnvVar struct {
	Name   string `json:"name"`
	Secret Ref    `json:"secret"`
}

// Identity is the workload identity the agent uses. The agent's credential
// reads the same values from the AZURE_* variables; they are recorded here so
// that `kvinject agent --check` and users reading the pod see one full picture.
type Identity struct {
	ClientID               string `json:"clientID"`
	TenantID               string `json:"tenantID"`
	TokenExpirationSeconds int64  `json:"tokenExpirationSeconds"`
}

// File is one file the agent writes: the value of one secret reference, or a
// rendered template.
type File struct {
	Name string `json:"name"`
	// Mode is the file's octal mode, four digits, e.g. "0440".
	Mode string `json:"mode"`
	// Secret is set for a kvinject.io/secret-<name> file.
	Secret *Ref `json:"secret,omitempty"`
	// Template is set for a kvinject.io/template-<name> file; Refs maps each
	// `secret "<ref>"` argument in it to its parsed reference.
	Template string         `json:"template,omitempty"`
	Refs     map[string]Ref `json:"refs,omitempty"`
}

// Ref names a secret version and, optionally, a property inside its JSON value.
type Ref struct {
	Vault   string `json:"vault"` // https://NAME.vault.azure.net
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // empty means the latest
	Path    string `json:"path,omitempty"`    // dot path into the JSON value
}

// SecretID is what the agent fetches: a ref without its property path.
type SecretID struct {
	Vault, Name, Version string
}

// ID returns the secret version the ref reads.
func (r Ref) ID() SecretID { return SecretID{Vault: r.Vault, Name: r.Name, Version: r.Version} }

// String is the ref in its full URL form, as users may write it.
func (r Ref) String() string {
	s := r.ID().String()
	if r.Path != "" {
		s += "#" + r.Path
	}
	return s
}

// String is the secret's URL.
func (id SecretID) String() string {
	s := id.Vault + "/secrets/" + id.Name
	if id.Version != "" {
		s += "/" + id.Version
	}
	return s
}

// FileMode parses Mode.
func (f File) FileMode() (fs.FileMode, error) { return ParseMode(f.Mode) }

// Refs returns every reference of the spec in file order, duplicates included.
func (s *Spec) AllRefs() []Ref {
	var refs []Ref
	for _, f := range s.Files {
		if f.Secret != nil {
			refs = append(refs, *f.Secret)
		}
		for _, k := range sortedKeys(f.Refs) {
			refs = append(refs, f.Refs[k])
		}
	}
	for _, e := range s.Env {
		refs = append(refs, e.Secret)
	}
	return refs
}

// SecretIDs returns the distinct secret versions the spec reads, in first-use order.
func (s *Spec) SecretIDs() []SecretID {
	seen := map[SecretID]bool{}
	var ids []SecretID
	for _, r := range s.AllRefs() {
		if id := r.ID(); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// Encode returns the spec as compact JSON for KVINJECT_SPEC.
func (s *Spec) Encode() (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Templates may hold <, > and &; keep them readable in the pod spec.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// ErrUnsupportedVersion is returned by Decode for a spec of another version.
var ErrUnsupportedVersion = errors.New("unsupported spec version")

// Decode parses and validates a spec from KVINJECT_SPEC.
func Decode(data []byte) (*Spec, error) {
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s is not JSON: %w", EnvSpec, err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("%s has version %q, this agent reads %q: run the agent image that matches the webhook: %w",
			EnvSpec, v.Version, Version, ErrUnsupportedVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode %s: %w", EnvSpec, err)
	}
	// encoding/json matches field names without regard to case; the spec
	// is written by the webhook alone, so any other spelling is refused.
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decode %s: %w", EnvSpec, err)
	}
	if err := exactFieldNames(raw, reflect.TypeFor[Spec](), "spec"); err != nil {
		return nil, fmt.Errorf("decode %s: %w", EnvSpec, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid %s: %w", EnvSpec, err)
	}
	return &s, nil
}

// Validate checks the invariants the webhook guarantees, so that a
// hand-written spec cannot make the agent write outside its mount or fetch
// from a non-https URL.
func (s *Spec) Validate() error { return s.validate(true) }

// ValidateParsed is Validate for a spec whose template files got their Refs
// from ParseTemplate on their own text, as the webhook builds them: those
// templates, checked by ParseTemplate, are not parsed again, and everything
// else is checked as Validate checks it. The agent, which reads a spec it
// did not build, uses Validate.
func (s *Spec) ValidateParsed() error { return s.validate(false) }

// validate is Validate; parseTemplates says whether template files' text is
// parsed to check their refs.
func (s *Spec) validate(parseTemplates bool) error {
	if s.Version != Version {
		return fmt.Errorf("version %q, want %q: %w", s.Version, Version, ErrUnsupportedVersion)
	}
	// The same checks as at admission: a spec the webhook would not have
	// made is refused here too.
	if err := ValidateMountPath(s.MountPath); err != nil {
		return fmt.Errorf("mountPath: %w", err)
	}
	if err := s.Identity.validate(); err != nil {
		return err
	}
	if s.Cache != nil {
		if err := s.Cache.Validate(); err != nil {
			return fmt.Errorf("cache %w", err)
		}
	}
	if len(s.Files) == 0 && len(s.Env) == 0 {
		return errors.New("no files and no env")
	}
	if len(s.Env) > MaxEnv {
		return fmt.Errorf("%d env variables, at most %d", len(s.Env), MaxEnv)
	}
	if err := s.validateDelivery(); err != nil {
		return err
	}
	if s.OnChange != nil {
		if err := s.OnChange.validate(s); err != nil {
			return fmt.Errorf("onChange: %w", err)
		}
	}
	if err := s.validateEnv(); err != nil {
		return err
	}
	if len(s.Files) > MaxFiles {
		return fmt.Errorf("%d files, at most %d", len(s.Files), MaxFiles)
	}
	seen := map[string]bool{}
	for _, f := range s.Files {
		if err := ValidateFileName(f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("file %q listed twice", f.Name)
		}
		seen[f.Name] = true
		switch {
		case f.Secret != nil && f.Template != "":
			return fmt.Errorf("file %q has both a secret and a template", f.Name)
		case f.Secret == nil && f.Template == "":
			return fmt.Errorf("file %q has neither a secret nor a template", f.Name)
		}
		if err := f.validate(parseTemplates); err != nil {
			return fmt.Errorf("file %q: %w", f.Name, err)
		}
	}
	return nil
}

// validateEnv checks the env variables: names, each once, references.
func (s *Spec) validateEnv() error {
	seen := map[string]bool{}
	for _, e := range s.Env {
		if err := ValidateEnvName(e.Name); err != nil {
			return fmt.Errorf("env: %w", err)
		}
		if seen[e.Name] {
			return fmt.Errorf("env %s listed twice", Quote(e.Name))
		}
		seen[e.Name] = true
		if err := e.Secret.validate(); err != nil {
			return fmt.Errorf("env %s: %w", Quote(e.Name), err)
		}
	}
	return nil
}

// validate checks an identity, when the spec has one.
func (id Identity) validate() error {
	if id.ClientID == "" && id.TenantID == "" && id.TokenExpirationSeconds == 0 {
		return nil
	}
	if err := ValidateClientID(id.ClientID); err != nil {
		return fmt.Errorf("identity clientID: %w", err)
	}
	if err := ValidateTenantID(id.TenantID); err != nil {
		return fmt.Errorf("identity tenantID: %w", err)
	}
	if err := ValidateTokenExpiration(id.TokenExpirationSeconds); err != nil {
		return fmt.Errorf("identity tokenExpirationSeconds: %w", err)
	}
	return nil
}

// validate checks the mode and the references of a file that has a secret
// or a template.
func (f File) validate(parseTemplate bool) error {
	if _, err := ParseMode(f.Mode); err != nil {
		return err
	}
	switch {
	case f.Template != "" && parseTemplate:
		if err := f.validateRefs(); err != nil {
			return err
		}
	case f.Template != "" && len(f.Refs) == 0:
		return errors.New("refs is empty: a template reads at least one secret")
	case f.Template == "" && f.Refs != nil:
		return errors.New("refs belong to a template file")
	}
	refs := f.Refs
	if f.Secret != nil {
		refs = map[string]Ref{"": *f.Secret}
	}
	for _, r := range refs {
		if err := r.validate(); err != nil {
			return err
		}
	}
	return nil
}

// validateRefs checks that a template file's refs are exactly the
// template's secret arguments, as ParseTemplate makes them.
func (f File) validateRefs() error {
	args, err := checkTemplateArgs(f.Template)
	if err != nil {
		return fmt.Errorf("template %w", err)
	}
	if len(f.Refs) != len(args) {
		return fmt.Errorf("refs has %d entries, the template reads %d references", len(f.Refs), len(args))
	}
	for a := range args {
		if _, ok := f.Refs[a]; !ok {
			return fmt.Errorf("the template's reference %s is not in refs", Quote(a))
		}
	}
	return nil
}

// exactFieldNames checks that every object key in v, decoded from JSON, is
// spelled exactly as a json tag of the struct type t describes it.
func exactFieldNames(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type mismatch: the decoder has refused it already
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "-" && f.IsExported() {
				fields[name] = f.Type
			}
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("%s: unknown field %s (field names are case-sensitive)", at, Quote(k))
			}
			if err := exactFieldNames(m[k], ft, at+"."+k); err != nil {
				return err
			}
		}
	case reflect.Slice:
		a, _ := v.([]any)
		for i, e := range a {
			if err := exactFieldNames(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, _ := v.(map[string]any)
		for _, k := range sortedKeys(m) {
			if err := exactFieldNames(m[k], t.Elem(), at+"["+Quote(k)+"]"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r Ref) validate() error {
	if _, err := parseVaultURL(r.Vault, ""); err != nil {
		return err
	}
	if err := validateSecretName(r.Name); err != nil {
		return err
	}
	if r.Version != "" {
		if err := validateVersion(r.Version); err != nil {
			return err
		}
	}
	if r.Path != "" {
		if _, err := SplitPath(r.Path); err != nil {
			return err
		}
	}
	return nil
}

// ParseMode parses an octal file mode that grants read access only: the
// files are secrets on a read-only mount, so write and execute bits, and
// setuid, setgid and sticky, are refused.
func ParseMode(s string) (fs.FileMode, error) {
	digits := s
	if len(s) == 4 && s[0] == '0' {
		digits = s[1:]
	}
	if len(digits) != 3 {
		return 0, fmt.Errorf("mode %s is not an octal mode like 0440", Quote(s))
	}
	v, err := strconv.ParseUint(digits, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %s is not an octal mode like 0440", Quote(s))
	}
	if v&^0o444 != 0 {
		return 0, fmt.Errorf("mode %s grants more than read: use only 4s and 0s, e.g. 0400, 0440, 0444", Quote(s))
	}
	if v&0o400 == 0 {
		// The agent writes as the app's user when it is known: the owner
		// must be able to read, or no one the pod runs as may.
		return 0, fmt.Errorf("mode %s does not let the file's owner read it: use 0400, 0440 or 0444", Quote(s))
	}
	return fs.FileMode(v), nil
}

// FormatMode writes a mode the way Spec stores it.
func FormatMode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m.Perm())) }
