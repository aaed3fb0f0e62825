package initagent

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/kvinject/kvinject/internal/keyvault"
	"github.com/kvinject/kvinject/internal/spec"
)

// Defaults of Options.
const (
	DefaultTimeout     = 2 * time.Minute
	DefaultConcurrency = 50
	MaxConcurrency     = 100
)

// Env holds the agent container's AZURE_* variables.
type Env struct {
	ClientID      string // AZURE_CLIENT_ID
	TenantID      string // AZURE_TENANT_ID
	TokenFile     string // AZURE_FEDERATED_TOKEN_FILE
	AuthorityHost string // AZURE_AUTHORITY_HOST
}

// EnvFrom reads the AZURE_* variables through getenv.
func EnvFrom(getenv func(string) string) Env {
	return Env{
		ClientID:      strings.TrimSpace(getenv(spec.EnvClientID)),
		TenantID:      strings.TrimSpace(getenv(spec.EnvTenantID)),
		TokenFile:     strings.TrimSpace(getenv(spec.EnvFederatedTokenFile)),
		AuthorityHost: strings.TrimSpace(getenv(spec.EnvAuthorityHost)),
	}
}

// Options configure the agent. New validates them once.
type Options struct {
	// Spec is the decoded KVINJECT_SPEC (spec.Decode).
	Spec *spec.Spec
	// Env holds the AZURE_* variables (EnvFrom).
	Env Env
	// Cloud selects the default authority host, whether instance discovery
	// may be skipped and the Key Vault token scope. Zero: CloudForSpec.
	Cloud spec.Cloud
	// Dir is where the agent sees the emptyDir; default Spec.MountPath.
	Dir string
	// ExecWrapper is the exec wrapper the agent copies into BinDir for a
	// spec with spec.DeliveryExec or kvinject.io/on-change: restart;
	// defaults spec.ExecSource and spec.BinMountPath.
	ExecWrapper, BinDir string
	// StateDir is where the agent and the refresh sidecar see the on-change
	// volume (kvinject.io/on-change); default spec.OnChangeStateDir.
	StateDir string
	// ProcRoot is where the sidecar reads the pod's processes to signal
	// them; default /proc.
	ProcRoot string
	// Boottime reads the boot clock for the change markers; default
	// CLOCK_BOOTTIME (tests replace it).
	Boottime func() (time.Duration, error)
	// Timeout bounds the whole run; default DefaultTimeout.
	Timeout time.Duration
	// Concurrency bounds parallel fetches; default DefaultConcurrency.
	Concurrency int
	// Out receives the --check report.
	Out io.Writer
	// Err receives one line per problem.
	Err io.Writer
	// Logger receives structured progress logs; never a value or a token.
	Logger logr.Logger
	// TerminationLog, when the file exists (the kubelet's
	// /dev/termination-log), also receives the problem lines, so that
	// `kubectl describe pod` shows them. It is never created.
	TerminationLog string

	// NewGetter replaces the Key Vault client (tests of the pure parts).
	// When set, no credential is created and no token is fetched.
	NewGetter func(vaultURL string) (keyvault.Getter, error)
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// ErrFailed is returned by Run when problems were reported on Err.
var ErrFailed = errors.New("kvinject agent failed")

// Agent is a validated configuration, ready to Run or Check.
type Agent struct {
	o        Options
	identity keyvault.Identity
	// fetchLogV is the verbosity of the per-secret log line: the refresh
	// loop logs what changed, not every read.
	fetchLogV int
	// fromCache counts the values the cache served (stale ones too).
	fromCache struct{ served, stale int }
	// steps names the step a run is in, for its watchdog.
	steps stepTracker
}

// New validates o and fills in defaults. Identity problems (AZURE_* missing
// or disagreeing with the spec) are not errors here: Run reports them as
// problems and Check lists them.
func New(o Options) (*Agent, error) {
	if o.Spec == nil {
		return nil, errors.New("no spec: set " + spec.EnvSpec)
	}
	if err := o.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("invalid %s: %w", spec.EnvSpec, err)
	}
	if o.Cloud.Name == "" {
		o.Cloud = CloudForSpec(o.Spec)
	}
	if o.Dir == "" {
		o.Dir = o.Spec.MountPath
	}
	if o.ExecWrapper == "" {
		o.ExecWrapper = spec.ExecSource
	}
	if o.BinDir == "" {
		o.BinDir = spec.BinMountPath
	}
	if o.StateDir == "" {
		o.StateDir = spec.OnChangeStateDir
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Boottime == nil {
		o.Boottime = bootClock
	}
	if !path.IsAbs(o.Dir) {
		return nil, fmt.Errorf("output directory %q is not absolute", o.Dir)
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultTimeout
	case o.Timeout < 0:
		return nil, fmt.Errorf("timeout %v is negative", o.Timeout)
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = DefaultConcurrency
	case o.Concurrency < 0 || o.Concurrency > MaxConcurrency:
		return nil, fmt.Errorf("concurrency %d: want 1 to %d", o.Concurrency, MaxConcurrency)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Err == nil {
		o.Err = io.Discard
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	id, err := resolveIdentity(o.Spec, o.Env, o.Cloud)
	if err != nil {
		return nil, err
	}
	return &Agent{o: o, identity: id}, nil
}

// CloudForSpec guesses the cloud from the spec's vault host names; the
// public cloud when none matches.
func CloudForSpec(s *spec.Spec) spec.Cloud {
	vaults := []string{s.Vault}
	for _, r := range s.AllRefs() {
		vaults = append(vaults, r.Vault)
	}
	for _, name := range spec.CloudNames() {
		c, _ := spec.LookupCloud(name)
		for _, v := range vaults {
			if v != "" && hostHasSuffix(keyvault.Host(v), c.VaultSuffix) {
				return c
			}
		}
	}
	return spec.PublicCloud()
}

func hostHasSuffix(host, suffix string) bool {
	return suffix != "" && strings.HasSuffix(host, "."+strings.ToLower(suffix))
}

// resolveIdentity reconciles AZURE_* with the spec's identity: the
// environment wins, the spec fills gaps, and a disagreement is an error
// (reported by validate) because it means the pod was edited after
// admission or the agent runs with someone else's variables.
func resolveIdentity(s *spec.Spec, env Env, cloud spec.Cloud) (keyvault.Identity, error) {
	id := keyvault.Identity{ClientID: env.ClientID, TenantID: env.TenantID, TokenFile: env.TokenFile}
	if id.ClientID == "" {
		id.ClientID = s.Identity.ClientID
	}
	if id.TenantID == "" {
		id.TenantID = s.Identity.TenantID
	}
	if id.TokenFile == "" {
		id.TokenFile = path.Join(spec.TokenMountPath, spec.TokenFileName)
	}
	var err error
	if id.AuthorityHost, err = spec.ParseAuthorityHost(env.AuthorityHost, cloud); err != nil {
		return id, fmt.Errorf("%s %w", spec.EnvAuthorityHost, err)
	}
	return id, nil
}

// problems lists what is wrong with the identity, for New and Check.
func identityProblems(id keyvault.Identity, s *spec.Spec, env Env) []string {
	var out []string
	mismatch := func(envName, envVal, specVal, what string) {
		if envVal != "" && specVal != "" && !strings.EqualFold(envVal, specVal) {
			out = append(out, fmt.Sprintf("%s is %q but the spec's %s is %q: the pod's environment was changed after admission; "+
				"delete the pod so the webhook injects it again, or fix the variable", envName, envVal, what, specVal))
		}
	}
	mismatch(spec.EnvClientID, env.ClientID, s.Identity.ClientID, "client id")
	mismatch(spec.EnvTenantID, env.TenantID, s.Identity.TenantID, "tenant id")
	if id.ClientID == "" {
		out = append(out, fmt.Sprintf("no client id: set %s (the webhook sets it from the pod annotation %s or the ServiceAccount annotation %s)",
			spec.EnvClientID, spec.AnnotationClientID, spec.SAAnnotationClientID))
	}
	if id.TenantID == "" {
		out = append(out, fmt.Sprintf("no tenant id: set %s (the webhook sets it from %s, %s or its --tenant-id)",
			spec.EnvTenantID, spec.AnnotationTenantID, spec.SAAnnotationTenantID))
	}
	return out
}
