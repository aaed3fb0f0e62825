package spec

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseOnChange(t *testing.T) {
	const allowed = "restart or signal:<NAME> with NAME one of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH"
	tests := []struct {
		in             string
		action, signal string
		err            string
	}{
		{in: "restart", action: OnChangeRestart},
		{in: "signal:SIGHUP", action: OnChangeSignal, signal: "SIGHUP"},
		{in: "signal:SIGUSR2", action: OnChangeSignal, signal: "SIGUSR2"},
		{in: "signal:SIGTERM", action: OnChangeSignal, signal: "SIGTERM"},
		{in: "Restart", err: `"Restart" must be ` + allowed + ": did you mean restart?"},
		{in: " restart", err: `" restart" must be ` + allowed + ": did you mean restart?"},
		{in: "signal:HUP", err: `"signal:HUP" must be ` + allowed + ": did you mean signal:SIGHUP?"},
		{in: "signal:sighup", err: `"signal:sighup" must be ` + allowed + ": did you mean signal:SIGHUP?"},
		{in: "SIGHUP", err: `"SIGHUP" must be ` + allowed + ": did you mean signal:SIGHUP?"},
		{in: "signal: SIGUSR1", err: `"signal: SIGUSR1" must be ` + allowed + ": did you mean signal:SIGUSR1?"},
		{in: "signal:SIGKILL", err: `"signal:SIGKILL" must be ` + allowed},
		{in: "signal:", err: `"signal:" must be ` + allowed},
		{in: "", err: `"" must be ` + allowed},
		{in: "reload", err: `"reload" must be ` + allowed},
	}
	for _, tc := range tests {
		action, signal, err := ParseOnChange(tc.in)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if diff := cmp.Diff(tc.err, got); diff != "" {
			t.Errorf("%q: error (-want +got):\n%s", tc.in, diff)
		}
		if action != tc.action || signal != tc.signal {
			t.Errorf("%q: got %q %q, want %q %q", tc.in, action, signal, tc.action, tc.signal)
		}
	}
}

func FuzzParseOnChange(f *testing.F) {
	for _, s := range []string{"restart", "signal:SIGHUP", "signal:hup", "Restart ", "signal:SIGKILL", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		action, signal, err := ParseOnChange(v)
		if err != nil {
			if action != "" || signal != "" {
				t.Fatalf("%q: error %v with a result %q %q", v, err, action, signal)
			}
			// The value is quoted bounded, whatever its length and bytes:
			// Quote's bound and at most 200 bytes of text around it.
			if len(err.Error()) > MaxQuotedLen+200 {
				t.Fatalf("%q: error of %d bytes", v, len(err.Error()))
			}
			return
		}
		// An accepted value is written back as it was given.
		if got := FormatOnChange(action, signal); got != v {
			t.Fatalf("%q parsed as %q %q, written back as %q", v, action, signal, got)
		}
	})
}

func TestOnChangeValidate(t *testing.T) {
	vault := "https://kv1.vault.azure.net"
	base := func() *Spec {
		return &Spec{
			Version: Version, Vault: vault, MountPath: DefaultMountPath, Containers: []string{"app"},
			Files: []File{{Name: "password", Mode: "0400", Secret: &Ref{Vault: vault, Name: "db"}}},
			Env:   []EnvVar{{Name: "PASSWORD", Secret: Ref{Vault: vault, Name: "db"}}},
		}
	}
	tests := []struct {
		name string
		oc   OnChange
		err  string
	}{
		{"restart, files and env", OnChange{Action: OnChangeRestart, Containers: []Consumer{{Name: "app", Files: true}, {Name: "batch", Env: []string{"PASSWORD"}}}}, ""},
		{"signal, files", OnChange{Action: OnChangeSignal, Signal: "SIGHUP", Containers: []Consumer{{Name: "app", Files: true, Env: []string{"PASSWORD"}}}}, ""},
		{"signal, env only", OnChange{Action: OnChangeSignal, Signal: "SIGHUP", Containers: []Consumer{{Name: "batch", Env: []string{"PASSWORD"}}}},
			`onChange: container "batch" reads only env variables, which a signal cannot change`},
		{"unknown signal", OnChange{Action: OnChangeSignal, Signal: "SIGKILL", Containers: []Consumer{{Name: "app", Files: true}}},
			`onChange: action "signal", signal "SIGKILL": want restart or signal with a signal`},
		{"restart with a signal", OnChange{Action: OnChangeRestart, Signal: "SIGHUP", Containers: []Consumer{{Name: "app", Files: true}}},
			`onChange: action "restart", signal "SIGHUP": want restart or signal with a signal`},
		{"no containers", OnChange{Action: OnChangeRestart}, "onChange: no containers"},
		{"twice", OnChange{Action: OnChangeRestart, Containers: []Consumer{{Name: "app", Files: true}, {Name: "app", Files: true}}}, `onChange: container "app" listed twice`},
		{"bad name", OnChange{Action: OnChangeRestart, Containers: []Consumer{{Name: "../x", Files: true}}}, `onChange: container name "../x" is not a DNS label`},
		{"reads nothing", OnChange{Action: OnChangeRestart, Containers: []Consumer{{Name: "app"}}}, `onChange: container "app" reads nothing`},
		{"unknown env", OnChange{Action: OnChangeRestart, Containers: []Consumer{{Name: "app", Env: []string{"OTHER"}}}}, `onChange: container "app": env "OTHER" is not in the spec's env`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.OnChange = &tc.oc
			got := ""
			if err := s.Validate(); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.err, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
