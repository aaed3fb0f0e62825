package execwrap

import (
	"errors"
	"io"
	"os"
	"strings"
)

// The wrapper's flags, as the webhook writes them (Flags) before "--" and
// the original program's argv.
const (
	flagEnvFile        = "--env-file="
	flagEnv            = "--env="
	flagTerminationLog = "--termination-log="
	flagProbe          = "--probe"
	flagCheckChanged   = "--check-changed="
	endOfFlags         = "--"
)

// CheckChangedFlag is the flag that makes the wrapper a liveness check
// first (kvinject.io/on-change: restart): it fails when the change marker
// file says the container's reads changed after its main process started
// (internal/onchange), and otherwise runs the program after "--", if any.
func CheckChangedFlag(markerFile string) string { return flagCheckChanged + markerFile }

// IsCheckChangedFlag says whether f is a CheckChangedFlag.
func IsCheckChangedFlag(f string) bool { return strings.HasPrefix(f, flagCheckChanged) }

// placeholderPrefix and placeholderSuffix surround a variable's name in
// Placeholder: text no command, arg or env value of a pod spec holds (the
// webhook denies one that does).
const (
	placeholderPrefix = "<kvinject-exec:"
	placeholderSuffix = ">"
)

// MaxEnvFileBytes bounds the env file the wrapper reads: more than the
// secrets volume's default size limit ever holds.
const MaxEnvFileBytes = 16 << 20

// Placeholder is the value the webhook gives a variable the wrapper
// delivers, in the container's env: the kubelet's expansion of $(NAME)
// leaves it wherever the value belongs, and the wrapper puts the value
// there.
func Placeholder(name string) string { return placeholderPrefix + name + placeholderSuffix }

// PlaceholderPrefix starts every placeholder.
const PlaceholderPrefix = placeholderPrefix

// HasPlaceholder says whether s holds text the wrapper would take for a
// placeholder of some variable.
func HasPlaceholder(s string) bool { return strings.Contains(s, placeholderPrefix) }

// Config is what the webhook tells the wrapper of one container.
type Config struct {
	// EnvFile is the agent's env file, in the kubelet's format.
	EnvFile string
	// Names are the variables this container gets; the file may hold more.
	Names []string
	// TerminationLog is the container's terminationMessagePath: a failure
	// is written there as well as to stderr.
	TerminationLog string
	// Probe: the argv comes from an exec probe, which the kubelet expands
	// with static env values only, so a delivered variable stands for the
	// empty string there, as for any valueFrom variable.
	Probe bool
	// CheckChanged is the change marker of a liveness check
	// (CheckChangedFlag); empty: none.
	CheckChanged string
	// Args is the program and its arguments, as the kubelet expanded them.
	Args []string
}

// Flags are the wrapper's arguments before the original program's argv:
// what the webhook writes after the wrapper's path. Where the kubelet
// expands them (a container's command, an exec probe; not a lifecycle
// hook), expanded is true and a '$' in a path is escaped.
func (c Config) Flags(expanded bool) []string {
	esc := func(s string) string { return s }
	if expanded {
		esc = EscapeDollar
	}
	f := []string{flagEnvFile + esc(c.EnvFile)}
	if c.TerminationLog != "" {
		f = append(f, flagTerminationLog+esc(c.TerminationLog))
	}
	for _, n := range c.Names {
		f = append(f, flagEnv+n)
	}
	if c.Probe {
		f = append(f, flagProbe)
	}
	return append(f, endOfFlags)
}

// EscapeDollar escapes s so that the kubelet's $(VAR) expansion gives s
// back: every '$' becomes "$$".
func EscapeDollar(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// SplitFlags returns the wrapper's flags of argv (the wrapper's arguments,
// without its own path) and what follows "--"; ok is false when argv has
// no "--".
func SplitFlags(argv []string) (flags, program []string, ok bool) {
	for i, a := range argv {
		if a == endOfFlags {
			return argv[:i], argv[i+1:], true
		}
	}
	return nil, nil, false
}

// ParseArgs reads the wrapper's arguments (without its own path). It reads
// the termination log's path first, so that every later problem can be
// written there.
func ParseArgs(argv []string) (Config, error) {
	var c Config
	flags, program, ok := SplitFlags(argv)
	if !ok {
		// A liveness check alone has no program, and no "--".
		flags, program = argv, nil
	}
	var problems []string
	for _, f := range flags {
		switch {
		case strings.HasPrefix(f, flagEnvFile):
			c.EnvFile = f[len(flagEnvFile):]
		case strings.HasPrefix(f, flagEnv):
			c.Names = append(c.Names, f[len(flagEnv):])
		case strings.HasPrefix(f, flagTerminationLog):
			c.TerminationLog = f[len(flagTerminationLog):]
		case f == flagProbe:
			c.Probe = true
		case strings.HasPrefix(f, flagCheckChanged) && len(f) > len(flagCheckChanged):
			c.CheckChanged = f[len(flagCheckChanged):]
		default:
			problems = append(problems, "unknown flag "+quote(f))
		}
	}
	c.Args = program
	switch {
	case !ok && c.CheckChanged == "":
		problems = append(problems, "no \"--\" before the program: kvinject-exec is run as the webhook writes it into a container's command")
	case !ok && (c.EnvFile != "" || len(c.Names) > 0):
		problems = append(problems, "no \"--\" before the program: the env variables are for a program")
	case ok && (len(program) == 0 || program[0] == ""):
		problems = append(problems, "no program after \"--\"")
	}
	if ok && c.EnvFile == "" && (c.CheckChanged == "" || len(c.Names) > 0) {
		problems = append(problems, "no "+flagEnvFile+"PATH")
	}
	if len(problems) > 0 {
		return c, errors.New(strings.Join(problems, "; "))
	}
	return c, nil
}

// Problem is why the wrapper does not run the program: one line that names
// the file, variable or program, never a value.
type Problem struct {
	Line string
	// Code is the wrapper's exit status: 126 for a program that cannot be
	// executed, 127 for one not found, as a shell's; 1 otherwise.
	Code int
}

func (p *Problem) Error() string { return p.Line }

// Plan is what the wrapper execs.
type Plan struct {
	Path string
	Argv []string
	Env  []string
}

// Prepare reads the env file and returns the program to exec, its argv
// and environment: environ with every placeholder of c.Names replaced by
// the value, and each of c.Names set.
func Prepare(c Config, environ []string) (*Plan, *Problem) {
	if c.EnvFile == "" {
		// A liveness check's program: the container's environment as it is.
		path, p := lookPath(c.Args[0], c.Args[0], getenv(environ, "PATH"))
		if p != nil {
			return nil, p
		}
		return &Plan{Path: path, Argv: c.Args, Env: environ}, nil
	}
	data, err := readBounded(c.EnvFile)
	if err != nil {
		return nil, &Problem{Line: "cannot read the env file " + c.EnvFile + " (" + errText(err) + "): the kvinject-agent init container writes it; check that it ran in this pod", Code: 1}
	}
	values := make(map[string]string, len(c.Names))
	var missing []string
	for _, n := range c.Names {
		v, found, err := LookupEnv(data, n)
		if err != nil {
			return nil, &Problem{Line: "the env file " + c.EnvFile + " " + errText(err) + ", reading " + n, Code: 1}
		}
		if !found {
			missing = append(missing, n)
			continue
		}
		values[n] = v
	}
	if len(missing) > 0 {
		return nil, &Problem{Line: "the env file " + c.EnvFile + " has no variable " + strings.Join(missing, ", ") + ": the kvinject.io/env- annotations of the pod name it, and the agent writes every one of them or none", Code: 1}
	}
	env := substituteEnv(environ, c.Names, values)
	argv := make([]string, len(c.Args))
	for i, a := range c.Args {
		if c.Probe {
			argv[i] = substitute(a, func(n string) (string, bool) { _, ok := values[n]; return "", ok })
		} else {
			argv[i] = substitute(a, lookupIn(values))
		}
	}
	path, p := lookPath(c.Args[0], argv[0], getenv(env, "PATH"))
	if p != nil {
		return nil, p
	}
	return &Plan{Path: path, Argv: argv, Env: env}, nil
}

func lookupIn(values map[string]string) func(string) (string, bool) {
	return func(n string) (string, bool) { v, ok := values[n]; return v, ok }
}

// substituteEnv replaces placeholders in every value of environ and sets
// each of names, in place when environ has it, else at the end.
func substituteEnv(environ, names []string, values map[string]string) []string {
	env := make([]string, 0, len(environ)+len(names))
	seen := make(map[string]bool, len(names))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if val, ok := values[k]; ok {
			if seen[k] {
				continue
			}
			seen[k] = true
			env = append(env, k+"="+val)
			continue
		}
		env = append(env, k+"="+substitute(v, lookupIn(values)))
	}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			env = append(env, n+"="+values[n])
		}
	}
	return env
}

// substitute replaces each placeholder in s whose name lookup knows.
func substitute(s string, lookup func(string) (string, bool)) string {
	if !HasPlaceholder(s) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, placeholderPrefix)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		rest := s[i+len(placeholderPrefix):]
		j := strings.Index(rest, placeholderSuffix)
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		if v, ok := lookup(rest[:j]); ok {
			b.WriteString(s[:i])
			b.WriteString(v)
			s = rest[j+len(placeholderSuffix):]
			continue
		}
		b.WriteString(s[:i+len(placeholderPrefix)])
		s = rest
	}
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxEnvFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxEnvFileBytes {
		return nil, errors.New("larger than 16 MiB")
	}
	return data, nil
}

func getenv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// lookPath finds the program as the container runtime does (runc's
// exec.LookPath on the process's PATH): a name with a '/' as it is, else
// the first executable regular file of that name in PATH, an empty PATH
// entry meaning the working directory. shown is the name as received,
// before substitution, for the problem line.
func lookPath(shown, name, pathEnv string) (string, *Problem) {
	if strings.Contains(name, "/") {
		if err := executable(name); err != nil {
			return "", cannotExecute(shown, err)
		}
		return name, nil
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", &Problem{Line: "the program " + quote(shown) + " is not in PATH (" + quote(pathEnv) + "): the container's command, or the image's ENTRYPOINT in the kvinject.io/entrypoint- annotation, names a program the image does not have", Code: 127}
}

func executable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case fi.IsDir():
		return errors.New("is a directory")
	case fi.Mode()&0o111 == 0:
		return os.ErrPermission
	}
	return nil
}

func cannotExecute(shown string, err error) *Problem {
	code := 126
	if errors.Is(err, os.ErrNotExist) {
		code = 127
	}
	return &Problem{Line: "cannot execute the program " + quote(shown) + ": " + errText(err), Code: code}
}

// CannotExecute is the problem of an exec that failed.
func CannotExecute(shown string, err error) *Problem { return cannotExecute(shown, err) }

// errText is err's text without the path os.PathError repeats.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// quote quotes s for a problem line, bounded.
func quote(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteString("\\x")
			const hex = "0123456789abcdef"
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
